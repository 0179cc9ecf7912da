"""Path operations confined to a root directory.

Two uses:
* discovery on the host (``--root DIR``): `resolve` follows symlinks the way the
  kernel would if DIR were ``/`` (absolute links and ``..`` stay inside DIR);
* writes inside a container rootfs: `open_dir` walks with openat2(RESOLVE_IN_ROOT |
  RESOLVE_NO_MAGICLINKS), or component by component with O_NOFOLLOW where openat2 is
  missing, so an image's links can never lead a write out of its rootfs.
"""

import errno
import posix      # not os: nvbind.early says why
import stat

from nvbind.early import split

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
            st = posix.lstat(root.rstrip("/") + cur)
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_LINKS:
                return None
            try:
                target = posix.readlink(root.rstrip("/") + cur)
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
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10


_has_openat2 = None


def openat2_available() -> bool:
    global _has_openat2
    if _has_openat2 is None:
        fd = posix.open("/", posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC)
        try:
            posix.close(_openat2(fd, ".", posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC))
            _has_openat2 = True
        except OSError:
            _has_openat2 = False
        finally:
            posix.close(fd)
    return _has_openat2


def _openat2(dirfd: int, path: str, flags: int) -> int:
    from nvbind.sysio import syscalls   # lazily: only the container-side writes need it
    return syscalls.openat2(dirfd, path, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)


DIR_FLAGS = posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC


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
        # create what is missing, each component resolved from the root again
        return _walk(rootfd, comps, True,
                     lambda fd, i: _openat2(rootfd, "/".join(comps[: i + 1]), DIR_FLAGS))
    if ".." in comps:
        raise OSError(errno.EPERM, "'..' is not allowed in a confined path", path)
    return _walk(rootfd, comps, create,
                 lambda fd, i: posix.open(comps[i], DIR_FLAGS | posix.O_NOFOLLOW, dir_fd=fd))


def _walk(rootfd: int, comps: list[str], create: bool, open_step) -> int:
    """Open `comps` one by one from the root (open_step(parent fd, index) -> fd), making a
    missing one (0755) when `create` is set."""
    fd = posix.dup(rootfd)
    try:
        for i, name in enumerate(comps):
            try:
                nfd = open_step(fd, i)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    posix.mkdir(name, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                nfd = open_step(fd, i)
            posix.close(fd)
            fd = nfd
        return fd
    except BaseException:
        posix.close(fd)
        raise


def symlink(rootfd: int, link: str, target: str) -> str:
    """Create symlink `link` -> `target` inside the root; say what was done."""
    return symlinks(rootfd, [(link, target)])[0]


def symlinks(rootfd: int, pairs) -> list[str]:
    """symlink() for each (link, target), each parent directory opened once (the driver's
    links share one or two directories)."""
    dirs: dict[str, int] = {}
    try:
        return [_symlink(dirs, rootfd, link, target) for link, target in pairs]
    finally:
        for fd in dirs.values():
            posix.close(fd)


def _symlink(dirs: dict, rootfd: int, link: str, target: str) -> str:
    parent, name = split(link.rstrip("/"))
    if not name or name in (".", ".."):
        raise OSError(errno.EINVAL, "bad link name", link)
    parent = parent or "/"
    if parent not in dirs:
        dirs[parent] = open_dir(rootfd, parent, create=True)
    dfd = dirs[parent]
    try:
        current = posix.readlink(name, dir_fd=dfd)
    except FileNotFoundError:
        current = None
    except OSError as e:
        if e.errno == errno.EINVAL:  # exists and is not a link: leave the image's file
            return f"kept {link}: the image has a file there"
        raise
    if current == target:
        return f"{link} -> {target} already present"
    if current is not None:
        posix.unlink(name, dir_fd=dfd)
    posix.symlink(target, name, dir_fd=dfd)
    return f"created {link} -> {target}"


# ---- a container rootfs as an object (libpathrs's Root is the model) -------------------
class Root:
    """A container rootfs held by one directory fd. Every path given to a method is taken
    inside it (openat2 RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS, or the O_NOFOLLOW walk), so a
    link in the image never leads out; the rootfs is opened once, by path, in `open`, and
    never again by a path string. Files are opened O_NONBLOCK and must be regular files
    (a FIFO, socket or device in the image can neither block nvbind nor be written through);
    files nvbind writes are new temp files (O_CREAT|O_EXCL|O_NOFOLLOW) renamed into place.
    """

    def __init__(self, fd: int, path: str | None = None):
        self.fd, self.path = fd, path

    @classmethod
    def open(cls, path: str) -> "Root":
        return cls(posix.open(path, DIR_FLAGS), path)

    def reopen(self) -> "Root":
        """The same directory, opened again in the caller's mount namespace (after
        unshare(CLONE_NEWNS) an fd from before still points into the old namespace's
        mounts, where nothing can be mounted). Verified to be the very same directory
        (device and inode); the path is the runtime's, never one from the image."""
        new = Root.open(self.path)
        a, b = posix.fstat(self.fd), posix.fstat(new.fd)
        if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
            new.close()
            raise OSError(errno.EXDEV, "the rootfs changed under its path", self.path)
        return new

    def close(self) -> None:
        if self.fd >= 0:
            posix.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def open_dir(self, path: str, create: bool = False) -> int:
        return open_dir(self.fd, path, create)

    def mkdir_p(self, path: str) -> None:
        posix.close(open_dir(self.fd, path, create=True))

    def symlink(self, link: str, target: str) -> str:
        return symlink(self.fd, link, target)

    def symlinks(self, pairs) -> list[str]:
        return symlinks(self.fd, pairs)

    def listdir(self, path: str) -> list[str]:
        dfd = open_dir(self.fd, path)
        try:
            return posix.listdir(dfd)
        finally:
            posix.close(dfd)

    def _split(self, path: str, create: bool = False) -> tuple[int, str]:
        parent, name = split("/" + path.strip("/"))
        if not name or name in (".", ".."):
            raise OSError(errno.EINVAL, "not a file name", path)
        return open_dir(self.fd, parent, create), name

    def open_file(self, path: str, flags: int = posix.O_RDONLY) -> int:
        """An fd of the regular file at `path` (never a link, FIFO, socket or device)."""
        dfd, name = self._split(path)
        try:
            fd = posix.open(name, flags | posix.O_NOFOLLOW | posix.O_NONBLOCK | posix.O_CLOEXEC
                         | posix.O_NOCTTY, dir_fd=dfd)
        finally:
            posix.close(dfd)
        if not stat.S_ISREG(posix.fstat(fd).st_mode):
            posix.close(fd)
            raise OSError(errno.EINVAL, "not a regular file", path)
        return fd

    def read_text(self, path: str, limit: int = 1 << 20) -> str:
        fd = self.open_file(path)
        try:
            data = b""
            while len(data) <= limit and (chunk := posix.read(fd, 65536)):
                data += chunk
            return data[:limit].decode("utf-8", "replace")
        finally:
            posix.close(fd)

    def write_atomic(self, path: str, data: str | bytes, mode: int = 0o644) -> None:
        """Replace `path` with a new regular file holding `data`: a temp file created
        O_EXCL|O_NOFOLLOW next to it, renamed over it (whatever the image had there, a
        FIFO included, is replaced, never opened)."""
        dfd, name = self._split(path, create=True)
        try:
            tmp = f".{name}.nvbind-{posix.getpid()}"
            fd = posix.open(tmp, posix.O_WRONLY | posix.O_CREAT | posix.O_EXCL | posix.O_NOFOLLOW
                         | posix.O_CLOEXEC, 0o600, dir_fd=dfd)
            try:
                posix.fchmod(fd, mode)
                with open(fd, "wb") as f:
                    f.write(data.encode() if isinstance(data, str) else data)
                st = posix.stat(name, dir_fd=dfd, follow_symlinks=False) if _exists(dfd, name) else None
                if st is not None and stat.S_ISDIR(st.st_mode):
                    raise OSError(errno.EISDIR, "a directory is in the way", path)
                posix.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                try:
                    posix.unlink(tmp, dir_fd=dfd)
                except OSError:
                    pass
                raise
        finally:
            posix.close(dfd)


def _exists(dfd: int, name: str) -> bool:
    try:
        posix.stat(name, dir_fd=dfd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False
