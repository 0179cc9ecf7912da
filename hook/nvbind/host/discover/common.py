"""What every discoverer shares: the host's architecture, the library directories, and
file tests that follow links inside the root (an absolute link under --root points into
the root, never at this machine's /)."""

import os
import stat

from nvbind.sysio import root as fsroot

LIB_DIRS = {
    "x86_64": ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/lib/x86_64-linux-gnu", "/lib64",
               "/usr/lib/x86_64-linux-gnu/nvidia/current", "/usr/lib64/nvidia", "/usr/lib"),
    "i386": ("/usr/lib/i386-linux-gnu", "/usr/lib32", "/lib/i386-linux-gnu", "/lib32",
             "/usr/lib/i386-linux-gnu/nvidia/current", "/usr/lib"),
    "aarch64": ("/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/lib/aarch64-linux-gnu", "/lib64",
                "/usr/lib"),
}


def machine_arch() -> str:
    m = os.uname().machine
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


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
