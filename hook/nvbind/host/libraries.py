"""Driver files grouped by capability, found through ld.so.cache with a directory fallback.

The library lists follow libnvidia-container's (nvc_info.c) and the toolkit's discover
package. Only files named for the running driver version are taken: a stale
libcuda.so.470.x left on the host is skipped with the reason.
"""

import os
import stat

from nvbind.sysio import root as fsroot
from nvbind.host import elf, ldcache
from nvbind.host.model import File

from nvbind.core.capabilities import CAPABILITIES, DEFAULT_CAPABILITIES

__all__ = ["CAPABILITIES", "DEFAULT_CAPABILITIES", "discover"]

LIBRARIES = {
    "utility": ("libnvidia-ml.so", "libnvidia-cfg.so", "libnvidia-nscq.so"),
    "compute": ("libcuda.so", "libcudadebugger.so", "libnvidia-opencl.so", "libnvidia-gpucomp.so",
                "libnvidia-ptxjitcompiler.so", "libnvidia-fatbinaryloader.so",
                "libnvidia-allocator.so", "libnvidia-compiler.so", "libnvidia-pkcs11.so",
                "libnvidia-pkcs11-openssl3.so", "libnvidia-nvvm.so"),
    "video": ("libvdpau_nvidia.so", "libnvidia-encode.so", "libnvidia-opticalflow.so",
              "libnvcuvid.so"),
    "graphics": ("libnvidia-eglcore.so", "libnvidia-glcore.so", "libnvidia-tls.so",
                 "libnvidia-glsi.so", "libnvidia-fbc.so", "libnvidia-ifr.so", "libnvidia-rtcore.so",
                 "libnvoptix.so", "libGLX_nvidia.so", "libEGL_nvidia.so", "libGLESv2_nvidia.so",
                 "libGLESv1_CM_nvidia.so", "libnvidia-glvkspirv.so", "libnvidia-cbl.so",
                 "libnvidia-vulkan-producer.so"),
    "ngx": ("libnvidia-ngx.so",),
}
# Libraries the driver uses that carry their own version, not the driver's (egl-gbm and
# egl-wayland are separate projects): found by soname. The toolkit's graphics discoverer
# mounts them; their JSON files in egl_external_platform.d name them.
OWN_VERSION = {
    "graphics": ("libnvidia-egl-gbm.so.1", "libnvidia-egl-wayland.so.1"),
}
# compat32 is the 32-bit build of the compute, utility, video and graphics libraries.
COMPAT32_OF = ("utility", "compute", "video", "graphics")

BINARIES = {
    "utility": ("nvidia-smi", "nvidia-debugdump", "nvidia-persistenced"),
    "compute": ("nvidia-cuda-mps-control", "nvidia-cuda-mps-server"),
}
BIN_DIRS = ("/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin")

LIB_DIRS = {
    "x86_64": ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/lib/x86_64-linux-gnu", "/lib64",
               "/usr/lib/x86_64-linux-gnu/nvidia/current", "/usr/lib64/nvidia", "/usr/lib"),
    "i386": ("/usr/lib/i386-linux-gnu", "/usr/lib32", "/lib/i386-linux-gnu", "/lib32",
             "/usr/lib/i386-linux-gnu/nvidia/current", "/usr/lib"),
    "aarch64": ("/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/lib/aarch64-linux-gnu", "/lib64",
                "/usr/lib"),
}
SUBDIRS = {"libvdpau_nvidia.so": "vdpau"}

GRAPHICS_FILES = {
    "graphics": ("/usr/share/vulkan/icd.d/nvidia_icd.json", "/etc/vulkan/icd.d/nvidia_icd.json",
                 "/usr/share/vulkan/implicit_layer.d/nvidia_layers.json",
                 "/etc/vulkan/implicit_layer.d/nvidia_layers.json",
                 "/usr/share/glvnd/egl_vendor.d/10_nvidia.json",
                 "/etc/glvnd/egl_vendor.d/10_nvidia.json",
                 "/usr/share/egl/egl_external_platform.d/15_nvidia_gbm.json",
                 "/usr/share/egl/egl_external_platform.d/10_nvidia_wayland.json",
                 "/usr/share/nvidia/nvoptix.bin",           # OptiX's data
                 # the GBM backend (a link to libnvidia-allocator on every layout)
                 "/usr/lib/x86_64-linux-gnu/gbm/nvidia-drm_gbm.so", "/usr/lib64/gbm/nvidia-drm_gbm.so"),
    "compute": ("/etc/OpenCL/vendors/nvidia.icd",),
    "display": ("/usr/lib/xorg/modules/drivers/nvidia_drv.so",
                "/usr/lib/xorg/modules/extensions/libglxserver_nvidia.so.{version}",
                # Debian: no version suffix (a link through its alternatives)
                "/usr/lib/xorg/modules/extensions/libglxserver_nvidia.so"),
}
SOCKETS = {
    "utility": ("/run/nvidia-persistenced/socket",),
    "compute": ("/run/nvidia-fabricmanager/socket",),
}
FIRMWARE_DIR = "/lib/firmware/nvidia/{version}"


def machine_arch() -> str:
    m = os.uname().machine
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def load_cache(root: str, skipped: list) -> list | None:
    path = fsroot.host(root, "/etc/ld.so.cache")
    try:
        with open(path, "rb") as f:
            data = f.read(64 << 20)
    except FileNotFoundError:
        skipped.append(("/etc/ld.so.cache", "not present; scanning library directories"))
        return None
    except OSError as e:
        skipped.append(("/etc/ld.so.cache", f"unreadable ({e.strerror}); scanning directories"))
        return None
    try:
        return ldcache.parse(data)
    except ldcache.CacheError as e:
        skipped.append(("/etc/ld.so.cache", f"ignored: {e}; scanning library directories"))
        return None


def _regular(root, path):
    """Whether `path` is a regular file, links followed inside root (an absolute link
    under --root points into the root, never at this machine's /)."""
    real = fsroot.resolve(root, path) if root not in ("", "/") else path
    if real is None:
        return False
    try:
        return stat.S_ISREG(os.stat(fsroot.host(root, real)).st_mode)
    except OSError:
        return False


def _real(root, path):
    """Host path of the file `path` leads to, links resolved inside root."""
    real = fsroot.resolve(root, path) if root not in ("", "/") else os.path.realpath(path)
    return fsroot.host(root, real)


def find_library(root, base, version, arch, cache_entries, skipped):
    """(container path, reason, soname) of `base`.<version>, or None (reason in skipped)."""
    want = f"{base}.{version}"
    dirs: list[tuple[str, str]] = []
    for name, path in cache_entries or ():
        if name != base and not name.startswith(base + "."):
            continue
        suffix = name[len(base) + 1:]
        if "." in suffix and suffix != version:
            skipped.append((path, f"ld.so.cache names version {suffix}, "
                                  f"the running driver is {version}"))
            continue
        d = os.path.dirname(path)
        if all(d != seen_dir for seen_dir, _ in dirs):
            dirs.append((d, f"directory of ld.so.cache entry {name}"))
    for d in LIB_DIRS.get(arch, ()):
        dirs.append((d, "directory scan"))
    sub = SUBDIRS.get(base)
    seen = set()
    for d, why in dirs:
        for cand in ([f"{d}/{sub}/{want}", f"{d}/{want}"] if sub else [f"{d}/{want}"]):
            if cand in seen:
                continue
            seen.add(cand)
            real = fsroot.resolve(root, cand)
            if real is None or not _regular(root, real):
                continue
            info = elf.read(fsroot.host(root, real))
            if info is not None and info.arch is not None and info.arch != arch:
                skipped.append((real, f"ELF for {info.arch}, wanted {arch}"))
                continue
            note = "ELF" if info else "no ELF header, accepted by name"
            soname = info.soname if info else None
            return real, f"{why}; {note}", soname
    return None


def discover(root, version, arch, capabilities, skipped) -> list[File]:
    """Every driver file for the given capabilities (a list sorted by path)."""
    files: list[File] = []
    caps = set(capabilities)
    entries = load_cache(root, skipped)
    native = ldcache.for_arch(entries, arch) if entries else None
    if native is not None and not native:
        skipped.append(("/etc/ld.so.cache", f"no {arch} entries; scanning library directories"))
    groups = [(cap, libs, arch, native) for cap, libs in LIBRARIES.items() if cap in caps]
    if arch == "x86_64" and "compat32" in caps:
        i386 = ldcache.for_arch(entries, "i386") if entries else None
        # labelled compat32:<base>: a container gets them only with compat32 AND the base
        # capability (Inventory.files_for), as libnvidia-container resolves its lists for
        # the 32-bit architecture only for the capabilities asked for
        groups += [(f"compat32:{c}", LIBRARIES[c], "i386", i386) for c in COMPAT32_OF if c in caps]
    for cap, libs, a, ents in groups:
        for base in libs:
            hit = find_library(root, base, version, a, ents, skipped)
            if hit is None:
                skipped.append((f"{base}.{version} ({cap}, {a})", "not found"))
                continue
            path, why, soname = hit
            files.append(File("library", cap, path, fsroot.host(root, path),
                              f"{cap} library: {why}", soname))
    for cap, sonames in OWN_VERSION.items():
        if cap not in caps:
            continue
        for soname in sonames:
            cands = [(p, f"ld.so.cache entry {soname}") for n, p in native or () if n == soname]
            cands += [(f"{d}/{soname}", "directory scan") for d in LIB_DIRS.get(arch, ())]
            for cand, why in cands:
                real = fsroot.resolve(root, cand)
                if real is None or not _regular(root, real):
                    continue
                info = elf.read(fsroot.host(root, real))
                if info is not None and info.arch is not None and info.arch != arch:
                    continue
                files.append(File("library", cap, real, fsroot.host(root, real),
                                  f"{cap} library (own version): {why}", soname))
                break
            else:
                skipped.append((f"{soname} ({cap}, {arch})", "not found"))
    for cap, names in BINARIES.items():
        if cap not in caps:
            continue
        for name in names:
            for d in BIN_DIRS:
                real = fsroot.resolve(root, f"{d}/{name}")
                if real and _regular(root, real):
                    # in /usr/bin, on every image's PATH, as NVIDIA mounts them, whatever
                    # the host's link (Debian's alternatives) resolves to
                    files.append(File("binary", cap, f"/usr/bin/{name}", fsroot.host(root, real),
                                      f"{cap} binary found in {d}"
                                      + (f" (resolves to {real})" if real != f"{d}/{name}" else "")))
                    break
            else:
                skipped.append((name, "binary not found"))
    # GSP firmware goes to every GPU container, whatever its capabilities (NVIDIA's
    # lookup_firmwares is not tied to one): see Inventory.files_for
    fw = FIRMWARE_DIR.format(version=version)
    try:
        names = sorted(os.listdir(fsroot.host(root, fw))) if fw else []
    except OSError:
        names = []
        skipped.append((fw, "no GSP firmware for this driver version"))
    for name in names:
        if name.endswith(".bin") and _regular(root, f"{fw}/{name}"):
            files.append(File("firmware", "utility", f"{fw}/{name}", fsroot.host(root, f"{fw}/{name}"),
                              f"GSP firmware of driver {version}"))
    for cap, paths in GRAPHICS_FILES.items():
        if cap not in caps:
            continue
        for p in paths:
            p = p.format(version=version)
            kind = "display" if cap == "display" else "config"
            if _regular(root, p):
                files.append(File(kind, cap, p, _real(root, p), f"{cap} configuration/module"))
    if "ngx" in caps:
        # DLSS for Windows games: Proton looks for nvngx.dll in nvidia/wine/ beside the GL
        # libraries (the driver installs it there)
        gl_dirs = [os.path.dirname(f.path) for f in files if f.soname == "libGLX_nvidia.so.0"]
        for d in dict.fromkeys(gl_dirs + list(LIB_DIRS.get(arch, ()))):
            found = False
            for name in ("nvngx.dll", "_nvngx.dll"):
                p = f"{d}/nvidia/wine/{name}"
                if _regular(root, p):
                    files.append(File("config", "ngx", p, fsroot.host(root, p),
                                      "DLSS for Proton/Wine (nvngx beside the GL libraries)"))
                    found = True
            if found:
                break
        else:
            skipped.append(("nvidia/wine/nvngx.dll", "not found beside the GL libraries"))
    for cap, paths in SOCKETS.items():
        if cap not in caps:
            continue
        for p in paths:
            try:
                st = os.lstat(fsroot.host(root, p))
            except OSError:
                skipped.append((p, "IPC socket/directory not present"))
                continue
            if stat.S_ISSOCK(st.st_mode) or stat.S_ISDIR(st.st_mode):
                files.append(File("socket", cap, p, fsroot.host(root, p),
                                  "IPC " + ("directory" if stat.S_ISDIR(st.st_mode) else "socket")))
            else:
                skipped.append((p, "neither a socket nor a directory"))
    return sorted(files, key=lambda f: (f.path, f.capability))
