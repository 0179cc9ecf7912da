#!/usr/bin/env python3
"""Real NVIDIA driver files, as real distributions install them (issue 12).

Builds, and caches under .cache/realhost/ (each stage rebuilt when its inputs change, by a
hash stamp):

  base/rootfs     debootstrap --variant=minbase bookworm: the plain container image
  debian/rootfs   base + Debian's NVIDIA 535 user space installed by apt INSIDE the root
                  (contrib/non-free/non-free-firmware enabled there only, i386 added), so
                  Debian's postinst scripts, update-alternatives and ldconfig ran; then the
                  kernel side written by hand with tools/simhost.py (procfs, /proc/devices,
                  mknod nodes, DRM by-path links), plus a non-NVIDIA card0 and the
                  persistenced socket
  runfile/rootfs  NVIDIA's .run installer layout made from the same packages' files:
                  every library flat in /usr/lib/x86_64-linux-gnu and /usr/lib/i386-linux-gnu,
                  binaries in /usr/bin, no alternatives, its own ld.so.cache (ldconfig -r)
  glvnd/rootfs    base + libglvnd0, libegl1, libgl1, libvulkan1, ocl-icd-libopencl1,
                  vulkan-tools: an image with the loaders
  debs/           a small library package (libyaml-0-2) to dpkg -i inside a container
  dlcheck         a dlopen checker compiled on this host (bookworm glibc), copied into images

The kernel side is simulated (no GPU here); everything above it is Debian's real packages.
No apt or dpkg runs on the host itself: only inside the roots (chroot, /proc mounted for the
duration, services blocked by policy-rc.d). Needs root, debootstrap and network access to
the Debian archive that the host's own APT sources name.

    tools/realhost.py [--cache DIR] [--force]     prints the paths as JSON
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "hook"))
import simhost  # noqa: E402
from nvbind.sysio import root as fsroot  # noqa: E402

CACHE = os.path.join(REPO, ".cache", "realhost")
SUITE = "bookworm"
FORMAT = 3          # bump when the build steps change in a way the lists below don't show
GPUS = 2
# Debian's NVIDIA 535 user space (source nvidia-graphics-drivers and friends). No kernel
# module package: with --no-install-recommends nothing pulls nvidia-kernel-dkms (checked
# by build_debian, which fails if one appears).
NVIDIA_PKGS = (
    "libcuda1", "libnvidia-ml1", "nvidia-smi", "libnvidia-ptxjitcompiler1", "libnvcuvid1",
    "libnvidia-encode1", "libnvidia-opticalflow1", "libgl1-nvidia-glvnd-glx", "libglx-nvidia0",
    "libegl-nvidia0", "libgles-nvidia1", "libgles-nvidia2", "nvidia-vulkan-icd",
    "libnvidia-eglcore", "libnvidia-glcore", "libnvidia-glvkspirv", "libnvidia-rtcore",
    "libnvoptix1", "libnvidia-ngx1", "libnvidia-egl-gbm1", "libnvidia-egl-wayland1",
    "libnvidia-allocator1", "libnvidia-cfg1", "libnvidia-nvvm4", "libcudadebugger1",
    "libnvidia-fbc1", "nvidia-opencl-icd", "nvidia-cuda-mps", "firmware-nvidia-gsp",
    "nvidia-persistenced", "xserver-xorg-video-nvidia", "nvidia-egl-icd", "nvidia-vdpau-driver",
    "libcuda1:i386", "libnvidia-ml1:i386", "libgl1-nvidia-glvnd-glx:i386",
    "libglx-nvidia0:i386", "libegl-nvidia0:i386", "libnvidia-encode1:i386", "libnvcuvid1:i386",
    "libnvidia-ptxjitcompiler1:i386", "nvidia-vulkan-icd:i386", "libgles-nvidia2:i386",
    "nvidia-egl-icd:i386",
)
FORBIDDEN = re.compile(r"^(nvidia-kernel-|nvidia-open-kernel-|linux-image-|linux-headers-|dkms$)")
IMAGE_PKGS = ("libglvnd0", "libegl1", "libgl1", "libglx0", "libxext6", "libvulkan1",
              "ocl-icd-libopencl1", "vulkan-tools", "libgbm1", "libwayland-client0",
              "libwayland-server0")
EXTRA_DEB = "libyaml-0-2"
COMPONENTS = "main contrib non-free non-free-firmware"
VIRTIO_BUS = "0000:00:02.0"      # card0: the VM's own virtio-gpu, not NVIDIA's


def log(msg: str) -> None:
    print(f"realhost: {msg}", file=sys.stderr, flush=True)


def sh(cmd, timeout=1800, **kw):
    return subprocess.run(cmd, check=True, timeout=timeout, **kw)


def mirror() -> tuple[str, str]:
    """(archive URI, updates suite) from the host's own APT sources (deb822 or one-line)."""
    uris = []
    for path in glob.glob("/etc/apt/sources.list.d/*.sources"):
        with open(path) as f:
            for line in f:
                if line.startswith("URIs:"):
                    uris += line.split()[1:]
    for path in ["/etc/apt/sources.list"] + glob.glob("/etc/apt/sources.list.d/*.list"):
        try:
            with open(path) as f:
                for line in f:
                    w = line.split()
                    if w[:1] == ["deb"]:
                        uris.append(w[2] if w[1].startswith("[") else w[1])
        except OSError:
            pass
    for u in uris:
        if u.rstrip("/").endswith("/debian"):
            return u, f"{SUITE}-updates"
    raise SystemExit("realhost: no Debian archive in the host's APT sources")


def digest(*parts) -> str:
    return hashlib.sha256(json.dumps([FORMAT, *parts], sort_keys=True).encode()).hexdigest()[:16]


def fresh(stage: str, key: str) -> bool:
    try:
        with open(os.path.join(stage, "stamp")) as f:
            return f.read().strip() == key
    except OSError:
        return False


def stamp(stage: str, key: str) -> None:
    with open(os.path.join(stage, "stamp"), "w") as f:
        f.write(key + "\n")


def replace_tree(src: str, dst: str) -> None:
    if os.path.lexists(dst):
        shutil.rmtree(dst)
    os.rename(src, dst)


class Chroot:
    """apt inside a root: /proc mounted, services blocked, DNS from the host; undone after."""

    def __init__(self, root: str):
        self.root = root

    def __enter__(self):
        with open(f"{self.root}/usr/sbin/policy-rc.d", "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(f"{self.root}/usr/sbin/policy-rc.d", 0o755)
        shutil.copy("/etc/resolv.conf", f"{self.root}/etc/resolv.conf")
        sh(["mount", "-t", "proc", "proc", f"{self.root}/proc"])
        return self

    def run(self, *cmd, timeout=1800, **kw):
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
               "LC_ALL": "C"}
        return sh(["chroot", self.root, *cmd], timeout=timeout, env=env, **kw)

    def __exit__(self, *exc):
        subprocess.run(["umount", "-l", f"{self.root}/proc"], check=False)
        os.unlink(f"{self.root}/usr/sbin/policy-rc.d")
        return False


def apt_sources(root: str, uri: str, updates: str, components: str) -> None:
    with open(f"{root}/etc/apt/sources.list", "w") as f:
        f.write(f"deb {uri} {SUITE} {components}\ndeb {uri} {updates} {components}\n")


def scratch(stage: str) -> str:
    """A stage's empty work directory (rootfs.tmp), what a broken earlier build left removed;
    replace_tree moves it into place when the stage is done."""
    os.makedirs(stage, exist_ok=True)
    tmp = f"{stage}/rootfs.tmp"
    if os.path.lexists(tmp):
        shutil.rmtree(tmp)
    return tmp


def build_base(cache: str, uri: str) -> str:
    stage = f"{cache}/base"
    key = digest("base", SUITE)
    if fresh(stage, key):
        return f"{stage}/rootfs"
    log(f"debootstrap --variant=minbase {SUITE} (about a minute)")
    tmp = scratch(stage)
    sh(["debootstrap", "--variant=minbase", SUITE, tmp, uri], stdout=subprocess.DEVNULL)
    for p in glob.glob(f"{tmp}/var/cache/apt/archives/*.deb"):
        os.unlink(p)
    replace_tree(tmp, f"{stage}/rootfs")
    stamp(stage, key)
    return f"{stage}/rootfs"


def installed_version(root: str, pkg: str) -> str:
    out = subprocess.run(["chroot", root, "dpkg-query", "-W", "-f", "${Version}", pkg],
                         capture_output=True, text=True, check=True).stdout
    return out.split("-")[0].split(":")[-1]


def kernel_side(root: str, version: str) -> None:
    """procfs, /proc/devices, nodes and DRM links (simhost's), a non-NVIDIA card0, the
    persistenced socket (bound again by tests that need a fresh one)."""
    simhost.kernel(root, GPUS, False, version)
    simhost.mknod(root, "/dev/dri/card0", simhost.DRM_MAJOR, 0)
    link = f"{root}/dev/dri/by-path/pci-{VIRTIO_BUS}-card"
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink("../card0", link)
    simhost.unix_socket(root + "/run/nvidia-persistenced/socket")


def build_debian(cache: str, base: str, base_key: str, uri: str, updates: str) -> str:
    stage = f"{cache}/debian"
    key = digest("debian", base_key, NVIDIA_PKGS, COMPONENTS, GPUS)
    if fresh(stage, key):
        return f"{stage}/rootfs"
    log("Debian's NVIDIA packages, installed by apt inside a copy of the base (a few minutes)")
    tmp = scratch(stage)
    sh(["cp", "-a", base, tmp])
    apt_sources(tmp, uri, updates, COMPONENTS)
    with Chroot(tmp) as c:
        c.run("dpkg", "--add-architecture", "i386")
        c.run("apt-get", "update", "-qq", stdout=subprocess.DEVNULL)
        sim = subprocess.run(["chroot", tmp, "apt-get", "install", "-s", "--no-install-recommends",
                              *NVIDIA_PKGS], capture_output=True, text=True, check=True,
                             env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})
        pulled = [ln.split()[1] for ln in sim.stdout.splitlines() if ln.startswith("Inst ")]
        bad = [p for p in pulled if FORBIDDEN.match(p.split(":")[0])]
        if bad:
            raise SystemExit(f"realhost: the package set would pull kernel packages: {bad}")
        c.run("apt-get", "install", "-y", "-qq", "--no-install-recommends", *NVIDIA_PKGS,
              stdout=subprocess.DEVNULL)
        c.run("apt-get", "clean")
        with open(f"{stage}/packages.txt", "w") as f:
            f.write("\n".join(pulled) + "\n")
    version = installed_version(tmp, "libcuda1")
    with open(f"{stage}/version", "w") as f:
        f.write(version + "\n")
    kernel_side(tmp, version)
    replace_tree(tmp, f"{stage}/rootfs")
    stamp(stage, key)
    return f"{stage}/rootfs"


def _owned(root: str, pkgs) -> list[str]:
    """Every path the given packages installed (dpkg's .list files), i386 ones included."""
    out = []
    for p in pkgs:
        name, _, arch = p.partition(":")
        for cand in (f"{name}:{arch or 'amd64'}.list", f"{name}.list"):
            path = f"{root}/var/lib/dpkg/info/{cand}"
            if os.path.exists(path):
                with open(path) as f:
                    out += [ln.strip() for ln in f if ln.strip()]
                break
    return out


def _copy_resolved(src_root: str, path: str, dst_root: str, dest: str) -> None:
    """Copy what `path` names inside src_root (links resolved in that root) to dest."""
    real = fsroot.resolve(src_root, path)
    if real is None or not os.path.isfile(src_root + real):
        return
    os.makedirs(os.path.dirname(dst_root + dest), exist_ok=True)
    shutil.copy2(src_root + real, dst_root + dest)


def build_runfile(cache: str, debian: str, debian_key: str) -> str:
    """The .run installer's layout from the Debian root's files: flat library dirs."""
    stage = f"{cache}/runfile"
    key = digest("runfile", debian_key, inspect.getsource(build_runfile))
    if fresh(stage, key):
        return f"{stage}/rootfs"
    log("the .run installer layout from the same files")
    tmp = scratch(stage)
    os.makedirs(tmp)
    with open(f"{cache}/debian/version") as f:
        version = f.read().strip()
    # every NVIDIA package the Debian root holds (those asked for and their nvidia deps)
    pulled = []
    with open(f"{cache}/debian/packages.txt") as f:
        for ln in f:
            p = ln.strip()
            n = p.split(":")[0]
            if "nvidia" in n or n.startswith(("libcuda", "libnvcuvid", "libnvoptix")):
                pulled.append(p)
    for path in _owned(debian, pulled):
        full = debian + path
        if os.path.isdir(full) and not os.path.islink(full):
            continue
        base = os.path.basename(path)
        m = re.match(r"^/usr/lib/(x86_64|i386)-linux-gnu/(nvidia/current/)?(.*)$", path)
        if m and m.group(3) in ("nvoptix.bin", "nvidia-drm_gbm.so"):
            pass                              # placed below, where the .run installer puts them
        elif m and not m.group(3).startswith(("nvidia/", "xorg/")):
            rest = m.group(3)
            if os.path.islink(full) and not rest.startswith(("vdpau/", "gbm/")):
                continue                      # links: ldconfig -r makes the soname ones
            if rest.startswith("libvdpau_nvidia.so."):
                rest = "vdpau/" + rest        # the .run installer's VDPAU directory
                if not os.path.islink(full):
                    os.makedirs(f"{tmp}/usr/lib/{m.group(1)}-linux-gnu/vdpau", exist_ok=True)
                    os.symlink(os.path.basename(path),
                               f"{tmp}/usr/lib/{m.group(1)}-linux-gnu/vdpau/libvdpau_nvidia.so.1")
            _copy_resolved(debian, path, tmp, f"/usr/lib/{m.group(1)}-linux-gnu/{rest}")
        elif path.startswith("/usr/lib/nvidia/current/") and os.access(full, os.X_OK) \
                and not base.endswith((".so", ".json")) and ".so." not in base:
            _copy_resolved(debian, path, tmp, f"/usr/bin/{base}")
        elif path.startswith(("/usr/bin/", "/usr/sbin/")):
            _copy_resolved(debian, path, tmp, f"/usr/bin/{base}")
        elif path.startswith("/usr/lib/nvidia/current/") and base.endswith(".so"):
            pass                              # Debian's private copies of X modules
        elif path.startswith(("/lib/firmware/", "/usr/share/vulkan/", "/usr/share/glvnd/",
                              "/usr/share/egl/", "/etc/OpenCL/", "/usr/share/nvidia/")):
            _copy_resolved(debian, path, tmp, path)
    # X modules where the .run installer puts them, with its version-suffixed server module
    xmod = "/usr/lib/xorg/modules"
    _copy_resolved(debian, f"{xmod}/drivers/nvidia_drv.so", tmp, f"{xmod}/drivers/nvidia_drv.so")
    _copy_resolved(debian, f"{xmod}/extensions/libglxserver_nvidia.so", tmp,
                   f"{xmod}/extensions/libglxserver_nvidia.so.{version}")
    os.symlink(f"libglxserver_nvidia.so.{version}", f"{tmp}{xmod}/extensions/libglxserver_nvidia.so")
    _copy_resolved(debian, "/usr/share/nvidia/nvoptix.bin", tmp, "/usr/share/nvidia/nvoptix.bin")
    os.makedirs(f"{tmp}/usr/lib/x86_64-linux-gnu/gbm", exist_ok=True)
    os.symlink(f"../libnvidia-allocator.so.{version}",
               f"{tmp}/usr/lib/x86_64-linux-gnu/gbm/nvidia-drm_gbm.so")
    # the .run installer's development links and its ld.so.conf
    for arch in ("x86_64", "i386"):
        d = f"{tmp}/usr/lib/{arch}-linux-gnu"
        if os.path.exists(f"{d}/libcuda.so.{version}"):
            os.symlink("libcuda.so.1", f"{d}/libcuda.so")
    os.makedirs(f"{tmp}/etc", exist_ok=True)
    with open(f"{tmp}/etc/ld.so.conf", "w") as f:
        f.write("/usr/lib/x86_64-linux-gnu\n/usr/lib/i386-linux-gnu\n")
    sh(["ldconfig", "-r", tmp])
    kernel_side(tmp, version)
    with open(f"{stage}/version", "w") as f:
        f.write(version + "\n")
    replace_tree(tmp, f"{stage}/rootfs")
    stamp(stage, key)
    return f"{stage}/rootfs"


def build_glvnd(cache: str, base: str, base_key: str, uri: str, updates: str) -> str:
    stage = f"{cache}/glvnd"
    key = digest("glvnd", base_key, IMAGE_PKGS, EXTRA_DEB)
    if fresh(stage, key):
        return f"{stage}/rootfs"
    log("the container image with glvnd, Vulkan and OpenCL loaders")
    tmp = scratch(stage)
    sh(["cp", "-a", base, tmp])
    apt_sources(tmp, uri, updates, "main")
    with Chroot(tmp) as c:
        c.run("apt-get", "update", "-qq", stdout=subprocess.DEVNULL)
        c.run("apt-get", "install", "-y", "-qq", "--no-install-recommends", *IMAGE_PKGS,
              stdout=subprocess.DEVNULL)
        # a library package to install inside a container later (dpkg runs ldconfig)
        os.makedirs(f"{tmp}/tmp/debs", exist_ok=True)
        c.run("sh", "-c", f"cd /tmp/debs && apt-get download -qq {EXTRA_DEB}")
        c.run("apt-get", "clean")
    debs = f"{cache}/debs"
    if os.path.lexists(debs):
        shutil.rmtree(debs)
    shutil.move(f"{tmp}/tmp/debs", debs)
    replace_tree(tmp, f"{stage}/rootfs")
    stamp(stage, key)
    return f"{stage}/rootfs"


def build_dlcheck(cache: str) -> str:
    src = os.path.join(HERE, "csrc", "dlcheck.c")
    with open(src, "rb") as f:
        key = hashlib.sha256(f.read()).hexdigest()[:16]
    out = f"{cache}/dlcheck"
    if fresh(cache, "dlcheck-" + key) and os.path.exists(out):
        return out
    sh(["gcc", "-O1", "-o", out, src, "-ldl"])
    with open(os.path.join(cache, "stamp"), "w") as f:
        f.write("dlcheck-" + key + "\n")
    return out


def build_all(cache: str = CACHE) -> dict:
    if os.geteuid() != 0:
        raise SystemExit("realhost: needs root (debootstrap, chroot, mknod)")
    if not shutil.which("debootstrap"):
        raise SystemExit("realhost: debootstrap is not installed (make realhost installs it)")
    os.makedirs(cache, exist_ok=True)
    uri, updates = mirror()
    base = build_base(cache, uri)
    base_key = digest("base", SUITE)
    debian = build_debian(cache, base, base_key, uri, updates)
    debian_key = digest("debian", base_key, NVIDIA_PKGS, COMPONENTS, GPUS)
    runfile = build_runfile(cache, debian, debian_key)
    glvnd = build_glvnd(cache, base, base_key, uri, updates)
    with open(f"{cache}/debian/version") as f:
        version = f.read().strip()
    return {"base": base, "debian": debian, "runfile": runfile, "glvnd": glvnd,
            "debs": f"{cache}/debs", "dlcheck": build_dlcheck(cache), "version": version,
            "gpus": GPUS, "image_key": digest("images", base_key, IMAGE_PKGS, EXTRA_DEB)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", default=CACHE)
    ap.add_argument("--force", action="store_true", help="rebuild every stage")
    a = ap.parse_args()
    if a.force and os.path.isdir(a.cache):
        shutil.rmtree(a.cache)
    print(json.dumps(build_all(a.cache), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
