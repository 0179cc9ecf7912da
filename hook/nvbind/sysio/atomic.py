"""One way to replace a file: a new temp file (O_EXCL|O_NOFOLLOW, never an existing path or
a planted link) in the same directory, written, fsynced, renamed over the target."""

import os


def write(path: str, data: str | bytes, mode: int | None = None, durable: bool = True) -> None:
    """Replace `path` with `data`. mode: the new file's mode (default: the old file's, or
    0644). The directory must exist. durable=False: no fsync, for records that mean
    nothing after a crash anyway (a lease names the boot it was taken in)."""
    d = os.path.dirname(path) or "."
    if mode is None:
        try:
            mode = os.stat(path).st_mode & 0o777
        except OSError:
            mode = 0o644
    tmp = os.path.join(d, f".{os.path.basename(path)}.nvbind-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
