"""The driver's programs (nvidia-smi, MPS), mounted at /usr/bin/<name> as NVIDIA does."""

from nvbind.host.discover.common import _regular
from nvbind.host.model import File
from nvbind.sysio import root as fsroot

BINARIES = {
    "utility": ("nvidia-smi", "nvidia-debugdump", "nvidia-persistenced"),
    "compute": ("nvidia-cuda-mps-control", "nvidia-cuda-mps-server"),
}
BIN_DIRS = ("/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin")


def binaries(root, caps, skipped) -> list[File]:
    files: list[File] = []
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
    return files
