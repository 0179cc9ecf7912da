"""Issue 12, items 2 and 3: per capability, what the container gets against NVIDIA's own lists.

NVIDIA's lists, as data (facts read from the sources, not their code):
* libnvidia-container src/nvc_info.c (commit 00b4b47e2a3eed09f8059eb39feaa0b4540d22d9):
  utility_bins, compute_bins, utility_libs, compute_libs, video_libs, graphics_libs,
  graphics_libs_glvnd, ngx_libs; the 32-bit (compat32) set is the same lists resolved for
  the 32-bit architecture, only for the capabilities asked for; GSP firmware is looked up
  for every container (lookup_firmwares, unless OPT_NO_GSP_FIRMWARE).
* nvidia-container-toolkit internal/discover/graphics.go (commit 886c6b973ef2...):
  NewGraphicsMountsDiscoverer mounts libnvidia-egl-gbm.so.*, the JSON files
  glvnd/egl_vendor.d/10_nvidia.json, vulkan/icd.d/nvidia_icd.json,
  vulkan/implicit_layer.d/nvidia_layers.json, egl/egl_external_platform.d/15_nvidia_gbm.json,
  egl/egl_external_platform.d/10_nvidia_wayland.json, nvidia/nvoptix.bin (under /etc and
  /usr/share), and for display the X driver nvidia_drv.so and libglxserver_nvidia.so.<version>.
  Its graphics discoverer also mounts X11/xorg.conf.d/10-nvidia.conf and
  X11/xorg.conf.d/nvidia-drm-outputclass.conf (under /etc and /usr/share) for graphics or
  display (current main, internal/discover/graphics.go NewGraphicsMountsDiscoverer).
  Later toolkit releases (1.17, as `nvidia-ctk cdi generate` logs show) also select
  libnvidia-egl-wayland.so.*, libnvidia-vulkan-producer.so.<version> and
  gbm/nvidia-drm_gbm.so (-> libnvidia-allocator).

DIFFERENCES lists every deliberate departure; README's table is drafted in
docs/real-hosts.md.
"""
import os
import re

import pytest

from realenv import debian_host, host, real, real_state  # noqa: F401 (fixtures)

NVIDIA = {
    "utility": {"libnvidia-ml.so", "libnvidia-cfg.so", "libnvidia-nscq.so",
                "bin:nvidia-smi", "bin:nvidia-debugdump", "bin:nvidia-persistenced",
                "bin:nv-fabricmanager"},
    "compute": {"libcuda.so", "libcudadebugger.so", "libnvidia-opencl.so", "libnvidia-gpucomp.so",
                "libnvidia-ptxjitcompiler.so", "libnvidia-fatbinaryloader.so",
                "libnvidia-allocator.so", "libnvidia-compiler.so", "libnvidia-pkcs11.so",
                "libnvidia-pkcs11-openssl3.so", "libnvidia-nvvm.so", "libnvidia-tileiras.so",
                "bin:nvidia-cuda-mps-control", "bin:nvidia-cuda-mps-server"},
    "video": {"libvdpau_nvidia.so", "libnvidia-encode.so", "libnvidia-opticalflow.so",
              "libnvcuvid.so"},
    "graphics": {"libnvidia-eglcore.so", "libnvidia-glcore.so", "libnvidia-tls.so",
                 "libnvidia-glsi.so", "libnvidia-fbc.so", "libnvidia-ifr.so", "libnvidia-rtcore.so",
                 "libnvoptix.so", "libGLX_nvidia.so", "libEGL_nvidia.so", "libGLESv2_nvidia.so",
                 "libGLESv1_CM_nvidia.so", "libnvidia-glvkspirv.so", "libnvidia-cbl.so",
                 # the toolkit's graphics discoverer
                 "libnvidia-egl-gbm.so", "libnvidia-egl-wayland.so", "libnvidia-vulkan-producer.so",
                 "file:/usr/share/glvnd/egl_vendor.d/10_nvidia.json",
                 "file:/usr/share/vulkan/icd.d/nvidia_icd.json",
                 "file:/usr/share/vulkan/implicit_layer.d/nvidia_layers.json",
                 "file:/usr/share/egl/egl_external_platform.d/15_nvidia_gbm.json",
                 "file:/usr/share/egl/egl_external_platform.d/10_nvidia_wayland.json",
                 "file:/usr/share/nvidia/nvoptix.bin",
                 "file:/usr/share/X11/xorg.conf.d/10-nvidia.conf",
                 "file:/usr/share/X11/xorg.conf.d/nvidia-drm-outputclass.conf",
                 "gbm:nvidia-drm_gbm.so"},
    "display": {"file:/usr/lib/xorg/modules/drivers/nvidia_drv.so",
                "file:/usr/lib/xorg/modules/extensions/libglxserver_nvidia.so"},
    "ngx": {"libnvidia-ngx.so"},
}
# nvbind's deliberate differences: item -> (capability where nvbind puts it, why)
DIFFERENCES = {
    "file:/etc/OpenCL/vendors/nvidia.icd": (
        "compute", "OpenCL's ICD file, so that ocl-icd finds libnvidia-opencl (NVIDIA's library "
        "lists have the library but not its ICD file)"),
    "ngx:nvngx.dll": ("ngx", "DLSS for Proton/Wine: nvidia/wine/nvngx.dll beside the GL libraries"),
    "file:/usr/share/X11/xorg.conf.d/10-nvidia.conf": (
        "display", "the X server's configuration, with the X modules it makes X load: only an "
        "X server reads it (NVIDIA's toolkit mounts it for graphics too)"),
    "file:/usr/share/X11/xorg.conf.d/nvidia-drm-outputclass.conf": (
        "display", "the same snippet under the .run installer's and Debian's name"),
}
ALWAYS = ("firmware",)        # GSP firmware: every GPU container
SOCKETS = {"/run/nvidia-persistenced/socket": "utility"}


def classify(path: str, version: str) -> tuple[str, str]:
    """(kind, item) for a container path nvbind mounted."""
    base = os.path.basename(path)
    if path.startswith(("/lib/firmware/nvidia/", "/usr/lib/firmware/nvidia/")):   # merged /usr
        return "firmware", path
    if path in SOCKETS:
        return "socket", path
    if "/gbm/" in path:
        return "lib64", "gbm:" + base
    if base in ("nvngx.dll", "_nvngx.dll"):
        return "lib64", "ngx:nvngx.dll"
    if path.startswith(("/usr/bin/", "/usr/sbin/", "/bin/", "/sbin/")):
        return "bin", "bin:" + base
    m = re.match(r"^(lib[^/]*?\.so)(\..*)?$", base)
    if m and "/xorg/" not in path:
        arch = "lib32" if "/i386-linux-gnu/" in path or "/lib32/" in path else "lib64"
        return arch, m.group(1)
    if base.startswith("libglxserver_nvidia.so"):
        return "file", "file:/usr/lib/xorg/modules/extensions/libglxserver_nvidia.so"
    return "file", "file:" + path.replace("/etc/", "/usr/share/", 1) \
        if path.startswith(("/etc/vulkan", "/etc/glvnd", "/etc/X11")) else "file:" + path


def owner(item: str) -> set:
    caps = {c for c, items in NVIDIA.items() if item in items}
    if item in DIFFERENCES:
        caps = {DIFFERENCES[item][0]}
    return caps


def present_on_host(root: str, item: str, version: str) -> bool:
    """Whether the host has what NVIDIA's item names (so a container could get it)."""
    if item.startswith("bin:"):
        return any(os.path.lexists(f"{root}{d}/{item[4:]}") for d in ("/usr/bin", "/usr/sbin"))
    if item.startswith("file:"):
        p = item[5:]
        cands = [p, p.replace("/usr/share/", "/etc/", 1)]
        return any(os.path.lexists(root + c) or any(os.path.lexists(f"{root}{c}.{version}")
                                                   for _ in [0]) for c in cands)
    if item.startswith("gbm:"):
        return os.path.lexists(f"{root}/usr/lib/x86_64-linux-gnu/gbm/{item[4:]}")
    for d, _dirs, files in os.walk(root + "/usr/lib/x86_64-linux-gnu"):
        for f in files:
            if f.startswith(item + ".") and not os.path.islink(os.path.join(d, f)):
                return True
    return False


CAPS = ["utility", "compute", "video", "graphics", "display", "ngx"]


@pytest.mark.parametrize("cap", CAPS)
def test_per_capability_against_nvidia_lists(host, cap):
    got = host.mounted(cap, image="glvnd")
    items = {}
    for p in got:
        kind, item = classify(p, host.version)
        items.setdefault(kind, set()).add(item)
    assert not items.get("lib32"), f"32-bit libraries without compat32: {sorted(items['lib32'])}"
    mine = items.get("lib64", set()) | items.get("bin", set()) | items.get("file", set())
    # nothing unrequested: every item belongs to this capability (NVIDIA's or ours)
    stray = sorted(i for i in mine if cap not in owner(i))
    assert not stray, f"{cap}: mounted but not {cap}'s: {stray}"
    # nothing missing: what NVIDIA gives for this capability and the host has, or a
    # documented difference
    want = {i for i in NVIDIA[cap] if present_on_host(host.root, i, host.version)}
    want = {i for i in want if DIFFERENCES.get(i, (cap,))[0] == cap}
    missing = sorted(want - mine)
    assert not missing, f"{cap}: NVIDIA gives {missing}, nvbind does not ({host.name} layout)"
    if cap != "display":
        assert items.get("firmware"), f"{cap}: no GSP firmware"


@pytest.mark.parametrize("caps,want32", [
    ("compute,utility,compat32", {"compute", "utility"}),
    ("graphics,compat32", {"graphics"}),
    ("compat32", set()),
    ("compute,utility", set()),
])
def test_compat32_only_with_its_base_capability(host, caps, want32):
    got = host.mounted(caps, image="glvnd")
    libs32 = {classify(p, host.version)[1] for p in got if classify(p, host.version)[0] == "lib32"}
    bad = sorted(i for i in libs32 if not owner(i) & want32)
    assert not bad, f"{caps}: unrequested 32-bit libraries {bad}"
    if want32:
        # the host's 32-bit builds of the base capability are all there
        host32 = set()
        for f in os.listdir(host.root + "/usr/lib/i386-linux-gnu") + (
                os.listdir(host.root + "/usr/lib/i386-linux-gnu/nvidia/current")
                if os.path.isdir(host.root + "/usr/lib/i386-linux-gnu/nvidia/current") else []):
            m = re.match(rf"^(lib[^/]*?\.so)\.{re.escape(host.version)}$", f)
            if m and owner(m.group(1)) & want32:
                host32.add(m.group(1))
        assert host32 <= libs32, f"{caps}: 32-bit libraries missing {sorted(host32 - libs32)}"
    else:
        assert not libs32


def test_x_configuration_with_display(debian_host):
    """Debian's X snippet (xserver-xorg-video-nvidia: /usr/share/X11/xorg.conf.d/
    nvidia-drm-outputclass.conf, a link through its alternatives to /etc/nvidia/) is
    mounted, with the host's content, for display and not for graphics alone."""
    conf = "/usr/share/X11/xorg.conf.d/nvidia-drm-outputclass.conf"
    assert os.path.islink(debian_host.root + conf)             # the alternatives chain
    real = conf
    while os.path.islink(debian_host.root + real):             # resolved inside the root
        real = os.path.join(os.path.dirname(real), os.readlink(debian_host.root + real))
    assert real.startswith("/etc/nvidia/"), real
    with open(debian_host.root + real) as f:
        want = f.read()
    assert re.search(r'Driver\s+"nvidia"', want)
    r = debian_host.run(f"cat {conf}", caps="display")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == want
    assert conf not in debian_host.mounted("graphics")
