"""Path operations confined to a root directory.

Two uses:
* discovery on the host (``--root DIR``): `resolve` follows symlinks the way the
  kernel would if DIR were ``/`` (absolute links and ``..`` stay inside DIR);
* writes inside a container rootfs: `open_dir` walks with openat2(RESOLVE_IN_ROOT |
  RESOLVE_NO_MAGICLINKS), or component by component with O_NOFOLLOW where openat2 is
  missing, so an image's links can never lead a write out of its rootfs.
"""

import errno
import os
import stat

MAX_LINKS = 40


def resolve(root: str, path: str) -> str | None:
    """The final path (relative to root, absolute form) of `path`, links followed in root.

    None if a component is missing or there are too many links.
    """
    parts = [p for p in path.split("/") if p]
    done: list[str] = []
    links = 0
    while parts:
        name = parts.pop(0)
        if name in (".", ""):
            continue
        if name == "..":
            if done:
                done.pop()
            continue
        cur = "/" + "/".join(done + [name])
        try:
            st = os.lstat(root.rstrip("/") + cur)
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_LINKS:
                return None
            try:
                target = os.readlink(root.rstrip("/") + cur)
            except OSError:
                return None
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        done.append(name)
    return "/" + "/".join(done)


def host(root: str, path: str) -> str:
    """Host path of container-style `path` under root."""
    return path if root in ("", "/") else root.rstrip("/") + path


# ---- confined writes --------------------------------------------------------
SYS_openat2 = 437  # x86_64 and aarch64 share the generic number
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10


_libc = None
_how = None
_has_openat2 = None


def openat2_available() -> bool:
    global _has_openat2
    if _has_openat2 is None:
        fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.close(_openat2(fd, ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
            _has_openat2 = True
        except OSError:
            _has_openat2 = False
        finally:
            os.close(fd)
    return _has_openat2


def _openat2(dirfd: int, path: str, flags: int) -> int:
    global _libc, _how
    import ctypes  # lazily: only the container-side writes need it
    if _libc is None:
        class OpenHow(ctypes.Structure):
            _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                        ("resolve", ctypes.c_uint64)]
        _libc, _how = ctypes.CDLL(None, use_errno=True), OpenHow
    how = _how(flags, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(SYS_openat2, dirfd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def open_dir(rootfd: int, path: str, create: bool = False) -> int:
    """A directory fd for `path` inside the root open at `rootfd`.

    Missing components are created (mode 0755) when `create` is set. A symlink met on
    the way is followed only inside the root (openat2) or refused (fallback walk).
    """
    comps = [p for p in path.split("/") if p not in ("", ".")]
    if openat2_available():
        try:
            return _openat2(rootfd, "/".join(comps) or ".", DIR_FLAGS)
        except FileNotFoundError:
            if not create:
                raise
        fd = os.dup(rootfd)
        try:
            for i, name in enumerate(comps):
                sub = "/".join(comps[: i + 1])
                try:
                    nfd = _openat2(rootfd, sub, DIR_FLAGS)
                except FileNotFoundError:
                    try:
                        os.mkdir(name, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass
                    nfd = _openat2(rootfd, sub, DIR_FLAGS)
                os.close(fd)
                fd = nfd
            return fd
        except BaseException:
            os.close(fd)
            raise
    fd = os.dup(rootfd)
    try:
        for name in comps:
            if name == "..":
                raise OSError(errno.EPERM, "'..' is not allowed in a confined path", path)
            try:
                nfd = os.open(name, DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(name, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                nfd = os.open(name, DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def symlink(rootfd: int, link: str, target: str) -> str:
    """Create symlink `link` -> `target` inside the root; say what was done."""
    parent, name = os.path.split(link.rstrip("/"))
    if not name or name in (".", ".."):
        raise OSError(errno.EINVAL, "bad link name", link)
    dfd = open_dir(rootfd, parent or "/", create=True)
    try:
        try:
            current = os.readlink(name, dir_fd=dfd)
        except FileNotFoundError:
            current = None
        except OSError as e:
            if e.errno == errno.EINVAL:  # exists and is not a link: leave the image's file
                return f"kept {link}: the image has a file there"
            raise
        if current == target:
            return f"{link} -> {target} already present"
        if current is not None:
            os.unlink(name, dir_fd=dfd)
        os.symlink(target, name, dir_fd=dfd)
        return f"created {link} -> {target}"
    finally:
        os.close(dfd)
