"""CUDA forward compatibility: prefer the image's newer libcuda from /usr/local/cuda/compat.

CUDA images for newer toolkits ship a newer user-mode driver in /usr/local/cuda/compat.
When it is newer than the host's driver, the container's loader must find it before the
host's libcuda. That is done by the ld cache: nvbind writes
/etc/ld.so.conf.d/00-nvbind-cuda-compat.conf inside the rootfs (through a confined
directory fd) and runs ldconfig with the compat directory ahead of the driver's. Files
from the image are never mounted or executed (CVE-2024-0132 came from doing that).
"""

import os

from nvbind.sysio import root as fsroot

COMPAT_DIR = "/usr/local/cuda/compat"
CONF = "00-nvbind-cuda-compat.conf"


def _version(text: str):
    try:
        return tuple(int(x) for x in text.split("."))
    except ValueError:
        return None


def newer_compat(rootfd: int, driver_version: str) -> str | None:
    """The compat directory when it holds a libcuda newer than `driver_version`."""
    host = _version(driver_version)
    if host is None:
        return None
    try:
        dfd = fsroot.open_dir(rootfd, COMPAT_DIR)
    except OSError:
        return None
    try:
        names = os.listdir(dfd)
    finally:
        os.close(dfd)
    for n in names:
        if n.startswith("libcuda.so."):
            v = _version(n[len("libcuda.so."):])
            if v is not None and len(v) >= 2 and v > host:
                return COMPAT_DIR
    return None


def write_conf(rootfd: int, directory: str) -> None:
    dfd = fsroot.open_dir(rootfd, "/etc/ld.so.conf.d", create=True)
    try:
        fd = os.open(CONF, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644, dir_fd=dfd)
        with os.fdopen(fd, "w") as f:
            f.write(f"# written by nvbind: CUDA forward compatibility\n{directory}\n")
    finally:
        os.close(dfd)


def prepare(rootfs: str, driver_version: str | None, folders: list[str]) -> list[str]:
    """ld cache folders in the order ldconfig must see them (compat first when it applies)."""
    if not driver_version:
        return folders
    rootfd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        compat = newer_compat(rootfd, driver_version)
        if compat is None:
            return folders
        write_conf(rootfd, compat)
    finally:
        os.close(rootfd)
    return [compat] + [f for f in folders if f != compat]
