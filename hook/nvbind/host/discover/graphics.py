"""Graphics and display files: Vulkan/EGL/GLX vendor JSON, OptiX data, the GBM backend,
X modules, and the nvngx DLLs Proton looks for (ngx)."""

import os

from nvbind.host.discover.common import LIB_DIRS, _real, _regular
from nvbind.host.model import File
from nvbind.sysio import root as fsroot

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
                "/usr/lib/xorg/modules/extensions/libglxserver_nvidia.so",
                # the X server's configuration snippet that makes it load nvidia_drv.so for
                # NVIDIA's DRM devices, under the two names NVIDIA's toolkit looks for:
                # nvidia-drm-outputclass.conf (the .run installer; Debian's, a link through
                # its alternatives to /etc/nvidia/), 10-nvidia.conf (NVIDIA's and Fedora's
                # packages); where the host has it, in either of X's directories
                "/etc/X11/xorg.conf.d/10-nvidia.conf", "/usr/share/X11/xorg.conf.d/10-nvidia.conf",
                "/etc/X11/xorg.conf.d/nvidia-drm-outputclass.conf",
                "/usr/share/X11/xorg.conf.d/nvidia-drm-outputclass.conf"),
}


def graphics(root, version, caps, skipped) -> list[File]:
    files: list[File] = []
    for cap, paths in GRAPHICS_FILES.items():
        if cap not in caps:
            continue
        for p in paths:
            p = p.format(version=version)
            kind = "display" if cap == "display" else "config"
            if _regular(root, p):
                files.append(File(kind, cap, p, _real(root, p), f"{cap} configuration/module"))
    return files


def ngx(root, arch, gl_files, skipped) -> list[File]:
    """nvngx.dll / _nvngx.dll in nvidia/wine/ beside the GL libraries."""
    files: list[File] = []
    gl_dirs = [os.path.dirname(f.path) for f in gl_files if f.soname == "libGLX_nvidia.so.0"]
    # DLSS for Windows games: Proton looks for nvngx.dll in nvidia/wine/ beside the GL
    # libraries (the driver installs it there)
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
    return files
