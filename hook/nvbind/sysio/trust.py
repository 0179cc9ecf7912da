"""One trust rule for everything nvbind reads back from its own directories (the config
cache, the inventory cache, the lease directory): the directory and the file are owned by
the user nvbind runs as (root on a host; under rootless podman uid 0 of its user namespace,
which is the user owning $XDG_RUNTIME_DIR/nvbind) and neither is writable by group or others.
Anything else may have been written by another user and is ignored (caches: rebuilt) or
refused (leases). Checked on the open file descriptor, never by path after the fact."""

import posix      # not os: the config cache is read before a hook knows it has work
import stat

from nvbind.early import dirname


def untrusted_stat(st, what: str = "") -> str | None:
    """Why a file or directory with this stat is not to be trusted, or None."""
    if st.st_uid != posix.geteuid():
        return f"{what}owned by uid {st.st_uid}, not {posix.geteuid()}".strip()
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{what}writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})".strip()
    return None


def untrusted_dir(path: str) -> str | None:
    try:
        st = posix.stat(path)
    except OSError as e:
        return e.strerror
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory"
    return untrusted_stat(st)


def open_trusted(path: str, limit: int = 32 << 20) -> bytes | None:
    """The bytes of `path` when it and its directory pass the rule (a regular file, not a
    link, opened without blocking); None otherwise."""
    if untrusted_dir(dirname(path) or "."):
        return None
    try:
        fd = posix.open(path, posix.O_RDONLY | posix.O_NOFOLLOW | posix.O_NONBLOCK | posix.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = posix.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or untrusted_stat(st):
            return None
        data = b""
        while chunk := posix.read(fd, 1 << 20):
            data += chunk
            if len(data) > limit:
                return None
        return data
    finally:
        posix.close(fd)
