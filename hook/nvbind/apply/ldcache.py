"""Inside the container (createContainer stage): soname links and the ld cache.

Runs in the container's mount namespace before pivot_root, so host paths are still
visible. Links are made through fsroot (never following the image's links out of the
rootfs). The cache is rebuilt by the *host's* ldconfig: a sealed in-memory copy, run with
`-r ROOTFS` (it chroots there) in a private mount namespace where the rootfs's /proc and
/sys are covered by empty tmpfs mounts, so that no link in the image can reach host
files through /proc/1/root and friends. Nothing from the image is ever executed.
"""

import fcntl
import os

from nvbind.sysio import root as fsroot
from nvbind.sysio import syscalls as nsys
from nvbind.errors import NvbindError

LDCONFIG_CANDIDATES = ("/sbin/ldconfig", "/usr/sbin/ldconfig", "/sbin/ldconfig.real")


def find_ldconfig(configured: str | None = None) -> str:
    for p in ([configured] if configured else []) + list(LDCONFIG_CANDIDATES):
        if p and os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    raise NvbindError("no host ldconfig found (looked at " + ", ".join(LDCONFIG_CANDIDATES) + ")")


def sealed_copy(path: str) -> int:
    """A memfd holding `path`'s bytes, sealed against any change."""
    fd = os.memfd_create("nvbind-ldconfig", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    with open(path, "rb") as src:
        while chunk := src.read(1 << 20):
            os.write(fd, chunk)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK
                | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
    return fd


def make_links(rootfs: str, links: list[tuple[str, str]]) -> list[str]:
    """links: [(target, link path in the container)]."""
    done = []
    rootfd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for target, link in links:
            if "/" in target:
                raise NvbindError(f"refusing link target '{target}': must be a file name")
            done.append(fsroot.symlink(rootfd, link, target))
    finally:
        os.close(rootfd)
    return done


def _child_setup(rootfs: str) -> None:
    nsys.private_mount_namespace()
    for sub in ("proc", "sys"):
        p = os.path.join(rootfs, sub)
        if os.path.isdir(p) and not os.path.islink(p):
            nsys.mount("tmpfs", p, "tmpfs", nsys.MS_NOSUID | nsys.MS_NODEV | nsys.MS_NOEXEC
                       | nsys.MS_RDONLY, "size=4k")


def _run_sealed(fd: int, argv: list[str], rootfs: str, timeout: float = 60) -> tuple[int, bytes]:
    """fork; in the child: private mount namespace, then fexecve the sealed copy with an
    empty environment. (No `subprocess`: it costs a hook ~5 ms to import.)"""
    import signal
    import time
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child either execs or reports and exits
        try:
            os.dup2(w, 2)
            nullfd = os.open("/dev/null", os.O_RDWR)
            os.dup2(nullfd, 0)
            os.dup2(nullfd, 1)
            os.chdir("/")
            _child_setup(rootfs)
            os.execve(fd, argv, {})
        except BaseException as e:  # noqa: BLE001
            os.write(2, f"cannot run ldconfig: {e}".encode())
        finally:
            os._exit(127)
    os.close(w)
    import select
    deadline = time.monotonic() + timeout
    out = b""
    while True:     # stderr until EOF (the child's exit), within the deadline
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([r], [], [], left)[0]:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(r)
            return 124, b"timed out"
        chunk = os.read(r, 65536)
        if not chunk:
            break
        out = (out + chunk)[-65536:]
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out


DROPIN = "00-nvbind.conf"


def write_dropin(rootfs: str, folders: list[str]) -> str | None:
    """/etc/ld.so.conf.d/00-nvbind.conf naming the driver's folders, so that any later
    ldconfig in the container (every apt-get/dpkg install of a library runs one) keeps
    them, as NVIDIA's toolkit does. Written through fsroot (never out of the rootfs).
    Returns why it could not be written (the folders still reach ldconfig's command line)."""
    rootfd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        dfd = fsroot.open_dir(rootfd, "/etc/ld.so.conf.d", create=True)
        try:
            fd = os.open(DROPIN, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o644, dir_fd=dfd)
            with os.fdopen(fd, "w") as f:
                f.write("# written by nvbind: the NVIDIA driver's library folders\n"
                        + "".join(d + "\n" for d in folders))
        finally:
            os.close(dfd)
    except OSError as e:
        return f"cannot write /etc/ld.so.conf.d/{DROPIN}: {e.strerror}"
    finally:
        os.close(rootfd)
    return None


def update(rootfs: str, folders: list[str], ldconfig: str | None = None,
           exe_fd: int | None = None) -> None:
    """Rebuild rootfs's ld cache. `exe_fd`: a sealed ldconfig made earlier (on the host side)."""
    for d in folders:
        if not d.startswith("/") or ".." in d.split("/"):
            raise NvbindError(f"refusing ld cache folder '{d}'")
    write_dropin(rootfs, folders)
    fd = exe_fd if exe_fd is not None else sealed_copy(find_ldconfig(ldconfig))
    try:
        rc, err = _run_sealed(fd, ["ldconfig", "-r", rootfs, *folders], rootfs)
    finally:
        if exe_fd is None:
            os.close(fd)
    if rc != 0:
        msg = err.decode("utf-8", "replace").strip().splitlines()
        raise NvbindError(f"ldconfig in {rootfs} failed ({rc}): " + (msg[-1] if msg else "no message"))
