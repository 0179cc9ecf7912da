"""The driver's libraries, found through ld.so.cache with a directory fallback.

The library lists follow libnvidia-container's (nvc_info.c) and the toolkit's discover
package. Only files named for the running driver version are taken: a stale
libcuda.so.470.x left on the host is skipped with the reason.
"""

import os

from nvbind.host.discover.common import LIB_DIRS, _regular
from nvbind.sysio import root as fsroot
from nvbind.host import elf, ldcache
from nvbind.host.model import File

from nvbind.core.capabilities import CAPABILITIES, DEFAULT_CAPABILITIES

__all__ = ["CAPABILITIES", "DEFAULT_CAPABILITIES", "libraries", "own_version"]

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

SUBDIRS = {"libvdpau_nvidia.so": "vdpau"}

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


def libraries(root, version, arch, caps, skipped) -> tuple[list[File], list | None]:
    """The driver's libraries for `caps` (and their 32-bit builds with compat32), and the
    native-architecture ld.so.cache entries (None: no cache) for own_version."""
    files: list[File] = []
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
    return files, native


def own_version(root, arch, caps, native, skipped) -> list[File]:
    """Libraries the driver uses that carry their own version, by soname."""
    files: list[File] = []
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
    return files
