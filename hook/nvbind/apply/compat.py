"""CUDA forward compatibility: prefer the image's newer libcuda from /usr/local/cuda/compat.

CUDA images for newer toolkits ship a newer user-mode driver in /usr/local/cuda/compat.
When it is newer than the host's driver, the container's loader must find it before the
host's libcuda. That is done by the ld cache: nvbind writes
/etc/ld.so.conf.d/00-nvbind-cuda-compat.conf inside the rootfs (through a confined
directory fd) and runs ldconfig with the compat directory ahead of the driver's. Files
from the image are never mounted or executed (CVE-2024-0132 came from doing that).
"""


COMPAT_DIR = "/usr/local/cuda/compat"
CONF = "00-nvbind-cuda-compat.conf"


def _version(text: str):
    try:
        return tuple(int(x) for x in text.split("."))
    except ValueError:
        return None


def newer_compat(root, driver_version: str) -> str | None:
    """The compat directory when it holds a libcuda newer than `driver_version`."""
    host = _version(driver_version)
    if host is None:
        return None
    try:
        names = root.listdir(COMPAT_DIR)
    except OSError:
        return None
    for n in names:
        if n.startswith("libcuda.so."):
            v = _version(n[len("libcuda.so."):])
            if v is not None and len(v) >= 2 and v > host:
                return COMPAT_DIR
    return None


def write_conf(root, directory: str) -> None:
    """A new file renamed over whatever the image has at that path (a FIFO there is
    replaced, never opened)."""
    root.write_atomic(f"/etc/ld.so.conf.d/{CONF}",
                      f"# written by nvbind: CUDA forward compatibility\n{directory}\n", 0o644)


def prepare(root, driver_version: str | None, folders: list[str]) -> list[str]:
    """ld cache folders in the order ldconfig must see them (compat first when it applies).
    root: a sysio.root.Root."""
    if not driver_version:
        return folders
    compat = newer_compat(root, driver_version)
    if compat is None:
        return folders
    write_conf(root, compat)
    return [compat] + [f for f in folders if f != compat]
