"""Inside the container (createContainer stage): soname links and the ld cache.

Runs in the container's mount namespace before pivot_root, so host paths are still
visible. Links are made through a sysio.root.Root (never following the image's links out
of the rootfs). The cache is rebuilt by the *host's* ldconfig: a sealed in-memory copy, run
with `-r .` from the rootfs's fd (it chroots there) in a private mount namespace where the rootfs's /proc and
/sys are covered by empty tmpfs mounts, so that no link in the image can reach host
files through /proc/1/root and friends. Nothing from the image is ever executed.
"""

import posix      # not os: nvbind.early says why

from nvbind.early import isfile
from nvbind.sysio import syscalls as nsys
from nvbind.errors import NvbindError

LDCONFIG_CANDIDATES = ("/sbin/ldconfig", "/usr/sbin/ldconfig", "/sbin/ldconfig.real")


def find_ldconfig(configured: str | None = None) -> str:
    for p in ([configured] if configured else []) + list(LDCONFIG_CANDIDATES):
        if p and isfile(p) and posix.access(p, posix.X_OK):
            return p
    raise NvbindError("no host ldconfig found (looked at " + ", ".join(LDCONFIG_CANDIDATES) + ")")


def sealed_copy(path: str) -> int:
    """A memfd holding `path`'s bytes, sealed against any change."""
    fd = posix.memfd_create("nvbind-ldconfig", posix.MFD_CLOEXEC | posix.MFD_ALLOW_SEALING)
    src = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC | posix.O_NONBLOCK)
    try:
        # in the kernel (no 1 MiB buffer in the hook: its peak RSS, and a copy, less)
        while posix.sendfile(fd, src, None, 1 << 24):
            pass
    finally:
        posix.close(src)
    try:
        nsys.add_seals(fd, nsys.F_SEAL_SEAL | nsys.F_SEAL_SHRINK | nsys.F_SEAL_GROW
                       | nsys.F_SEAL_WRITE)
    except OSError:
        posix.close(fd)
        raise
    return fd


def make_links(root, links: list[tuple[str, str]]) -> list[str]:
    """links: [(target, link path in the container)]; root: a sysio.root.Root."""
    for target, _link in links:
        if "/" in target:
            raise NvbindError(f"refusing link target '{target}': must be a file name")
    return root.symlinks([(link, target) for target, link in links])


def _child_setup(root) -> None:
    """In the ldconfig child: a private mount namespace, the rootfs's /proc and /sys covered
    by empty tmpfs mounts (targets opened inside the rootfs, mounted through their fds), the
    working directory the rootfs itself (fchdir: `ldconfig -r .` chroots there)."""
    nsys.private_mount_namespace()
    root = root.reopen()
    for sub in ("/proc", "/sys"):
        try:
            dfd = root.open_dir(sub)
        except OSError:
            continue
        try:
            nsys.mount("tmpfs", f"/proc/self/fd/{dfd}", "tmpfs", nsys.MS_NOSUID | nsys.MS_NODEV
                       | nsys.MS_NOEXEC | nsys.MS_RDONLY, "size=4k")
        finally:
            posix.close(dfd)
    posix.fchdir(root.fd)


def _run_sealed(fd: int, argv: list[str], root, timeout: float | None = None) -> tuple[int, bytes]:
    """fork; in the child: bounded (sysio.child), private mount namespace, then fexecve the
    sealed copy with an empty environment. (No `subprocess`: it costs a hook ~5 ms.)"""
    from nvbind.sysio import child
    parent = posix.getpid()
    r, w = posix.pipe2(posix.O_CLOEXEC)
    pid = posix.fork()
    if pid == 0:  # pragma: no cover - the child either execs or reports and exits
        try:
            child.setup(parent, w)
            _child_setup(root)
            posix.execve(fd, argv, {})
        except BaseException as e:  # noqa: BLE001
            posix.write(2, f"cannot run ldconfig: {e}".encode())
        finally:
            posix._exit(127)
    posix.close(w)
    status, out = child.wait(pid, r, child.LDCONFIG if timeout is None else timeout)
    if status is None:
        return 124, b"timed out"
    return posix.waitstatus_to_exitcode(status), out


DROPIN = "00-nvbind.conf"


def write_dropin(root, folders: list[str]) -> str | None:
    """/etc/ld.so.conf.d/00-nvbind.conf naming the driver's folders, so that any later
    ldconfig in the container (every apt-get/dpkg install of a library runs one) keeps
    them, as NVIDIA's toolkit does. Written through the Root (a new file renamed into
    place: never out of the rootfs, never through a FIFO or link the image put there).
    Returns why it could not be written (the folders still reach ldconfig's command line)."""
    try:
        root.write_atomic(f"/etc/ld.so.conf.d/{DROPIN}",
                          "# written by nvbind: the NVIDIA driver's library folders\n"
                          + "".join(d + "\n" for d in folders), 0o644)
    except OSError as e:
        return f"cannot write /etc/ld.so.conf.d/{DROPIN}: {e.strerror}"
    return None


def _checked(folders: list[str]) -> None:
    for d in folders:
        if not d.startswith("/") or ".." in d.split("/"):
            raise NvbindError(f"refusing ld cache folder '{d}'")


def _argv(folders: list[str]) -> list[str]:
    return ["ldconfig", "-r", ".", *folders]


def update(root, folders: list[str], ldconfig: str | None = None,
           exe_fd: int | None = None) -> None:
    """Rebuild the ld cache of `root` (a sysio.root.Root) in a child, and wait for it.
    `exe_fd`: a sealed ldconfig made earlier (on the host side)."""
    _checked(folders)
    write_dropin(root, folders)
    fd = exe_fd if exe_fd is not None else sealed_copy(find_ldconfig(ldconfig))
    try:
        rc, err = _run_sealed(fd, _argv(folders), root)
    finally:
        if exe_fd is None:
            posix.close(fd)
    if rc != 0:
        msg = err.decode("utf-8", "replace").strip().splitlines()
        raise NvbindError(f"ldconfig in the container failed ({rc}): "
                          + (msg[-1][:200] if msg else "no message"))


def handover(root, folders: list[str], ldconfig: str | None = None):
    """The ld cache as the last step of a createContainer hook: everything that can fail
    the nvbind way happens here (the folders, the drop-in, the sealed copy); what is
    returned turns the hook process itself into ldconfig (`become`), after nvbind has
    written its log line. No fork: the hook's own process runs ldconfig, as NVIDIA's
    update-ldcache does (a fork of the Python process and its wait cost every GPU
    container ~1.5 ms), and there is no child that could outlive the hook.

    ldconfig's exit status is the hook's, its stderr the hook's stderr (runc and crun put
    it into the error they report). Its deadline is the kernel's: an interval timer
    survives execve, and SIGALRM's default action ends ldconfig at LDCONFIG seconds
    (before the hook entry's own timeout) should the image make it block."""
    _checked(folders)
    write_dropin(root, folders)
    fd = sealed_copy(find_ldconfig(ldconfig))
    argv = _argv(folders)
    return lambda: _become(fd, argv, root)


def _become(fd: int, argv: list[str], root) -> None:
    """Never returns: this process becomes the sealed ldconfig (see handover)."""
    import _signal
    import sys
    from nvbind.sysio import child
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        child.stdio(2)          # stderr stays the engine's
        _child_setup(root)
        # the deadline: SIGALRM at its default action (terminate), not blocked, whatever
        # the engine handed down; the timer is set last, just before the exec
        _signal.signal(_signal.SIGALRM, _signal.SIG_DFL)
        _signal.pthread_sigmask(_signal.SIG_UNBLOCK, {_signal.SIGALRM})
        _signal.setitimer(_signal.ITIMER_REAL, child.LDCONFIG)
        posix.execve(fd, argv, {})
    except OSError as e:
        _signal.setitimer(_signal.ITIMER_REAL, 0)
        raise NvbindError(f"cannot run ldconfig in the container: {e}") from None
