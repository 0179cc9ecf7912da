"""One way to replace a file: a new temp file (O_EXCL|O_NOFOLLOW, never an existing path or
a planted link) in the same directory, written, fsynced, renamed over the target."""

import posix      # not os: nvbind.early says why

from nvbind.early import basename, dirname, join


def write(path: str, data: str | bytes, mode: int | None = None, durable: bool = True) -> None:
    """Replace `path` with `data`. mode: the new file's mode (default: the old file's, or
    0644). The directory must exist. durable=False: no fsync, for records that mean
    nothing after a crash anyway (a lease names the boot it was taken in)."""
    d = dirname(path) or "."
    if mode is None:
        try:
            mode = posix.stat(path).st_mode & 0o777
        except OSError:
            mode = 0o644
    tmp = join(d, f".{basename(path)}.nvbind-{posix.getpid()}")
    fd = posix.open(tmp, posix.O_WRONLY | posix.O_CREAT | posix.O_EXCL | posix.O_NOFOLLOW | posix.O_CLOEXEC, 0o600)
    try:
        with open(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            if durable:
                posix.fsync(f.fileno())
        posix.chmod(tmp, mode)
        posix.replace(tmp, path)
    except BaseException:
        try:
            posix.unlink(tmp)
        except OSError:
            pass
        raise
