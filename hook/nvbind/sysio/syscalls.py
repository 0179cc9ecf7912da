"""The few raw system calls nvbind needs (unshare, mount, setns, prctl, openat2, the new
mount API, bpf, flock and memfd seals), in one place, each made by its number.

In the frozen tree they go through `_nvbind_sys`, a module built into the launcher
(packaging/frontend/nvbind_sys.c): loading `_ctypes` and libffi for them cost the
createContainer hook ~0.15 MiB of peak RSS. Elsewhere (source runs, the
one-file build) through libc's syscall() by `_ctypes`, the C core of the standard
`ctypes` package, with the one scalar type it needs declared here. Either way every
integer argument is passed as a C long, so no 64-bit parameter ever reads a 32-bit
value's undefined upper half, and a call returns the kernel's result or -errno.
"""

import posix      # not os: nvbind.early says why
import sys

from nvbind.early import fsencode

CLONE_NEWNS = 0x00020000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
RTLD_NOW = 2

# The numbers: _nvbind_sys's NR, from the launcher's own <sys/syscall.h>; without it, for a
# 64-bit process on x86_64 or aarch64 (arch/x86/entry/syscalls/syscall_64.tbl,
# asm-generic/unistd.h), and none elsewhere (a 32-bit process on a 64-bit kernel has
# other numbers: every call then fails with ENOSYS). tests/unit/test_syscalls.py compares
# both with this machine's <sys/syscall.h>.
_NR = {
    "x86_64": {"unshare": 272, "mount": 165, "setns": 308, "prctl": 157, "flock": 73,
               "fcntl": 72, "bpf": 321, "open_tree": 428, "move_mount": 429, "openat2": 437,
               "mount_setattr": 442},
    "aarch64": {"unshare": 97, "mount": 40, "setns": 268, "prctl": 167, "flock": 32,
                "fcntl": 25, "bpf": 280, "open_tree": 428, "move_mount": 429, "openat2": 437,
                "mount_setattr": 442},
}
MACHINE = posix.uname().machine


def _ctypes_syscall():
    """syscall(nr, *args) -> result or -errno, through libc's syscall() (no _nvbind_sys)."""
    import _ctypes

    class Long(_ctypes._SimpleCData):
        _type_ = "l"

    class Fn(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = Long

    class Libc:
        _handle = _ctypes.dlopen(None, RTLD_NOW)

    fn = Fn(("syscall", Libc()))

    def arg(a):
        if isinstance(a, int):
            return Long(a)
        if type(a) is bytearray:        # written by the kernel: passed by address
            import ctypes
            return (ctypes.c_char * len(a)).from_buffer(a)
        if a is None or type(a) is bytes:
            return a                    # NULL, or read-only and NUL-terminated
        raise TypeError(f"syscall argument: int, None, bytes or bytearray, not {type(a).__name__}")

    def call(nr, *args):
        r = fn(Long(nr), *[arg(a) for a in args])
        return -_ctypes.get_errno() if r == -1 else r
    return call


def _ctypes_address(buf: bytearray) -> int:
    import ctypes
    if type(buf) is not bytearray:
        raise TypeError(f"address: a bytearray, not {type(buf).__name__}")
    return ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))


try:
    from _nvbind_sys import NR, address, syscall as _raw
except ImportError:     # now, not at the first call: a forked child may have closed imports
    _raw, address = _ctypes_syscall(), _ctypes_address
    NR = _NR.get("aarch64" if MACHINE == "arm64" else MACHINE, {}) if sys.maxsize > 2**32 else {}
# address(buf): where a bytearray's bytes are, for a pointer inside a structure given to
# the kernel; the caller keeps it alive and unresized meanwhile


def call(name: str, *args, path: str | None = None, what: str | None = None) -> int:
    """The system call NAME with ARGS (ints, None, bytes; bytearrays the kernel may fill);
    OSError naming PATH, or WHAT (else NAME), when it fails."""
    nr = NR.get(name)
    if nr is None:
        raise OSError(38, f"{name}: nvbind knows no system call numbers for {MACHINE}")
    for a in args:
        if isinstance(a, int) and not -(1 << 63) <= a < 1 << 63:
            raise OverflowError(f"{name}: argument {a} does not fit a C long")
    ret = _raw(nr, *args)
    if ret < 0:
        err = -ret
        if path is not None:
            raise OSError(err, posix.strerror(err), path)
        raise OSError(err, f"{what or name}: {posix.strerror(err)}")
    return ret


def _path(p: str | None) -> bytes | None:
    """A path argument: bytes the kernel reads up to their NUL, so none may hold one."""
    if p is None:
        return None
    b = fsencode(p)
    if b"\0" in b:
        raise ValueError(f"path {p!r} holds a NUL character")
    return b


def unshare(flags: int) -> None:
    call("unshare", flags)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None):
    call("mount", _path(source), _path(target), _path(fstype), flags, _path(data),
         what=f"mount {target}")


def prctl(option: int, arg2: int = 0) -> None:
    call("prctl", option, arg2, 0, 0, 0)


LOCK_EX = 2
F_ADD_SEALS = 1033
F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE = 0x1, 0x2, 0x4, 0x8


def flock(fd: int, op: int) -> None:
    """flock(2), retried when a signal interrupts it (as fcntl.flock is, PEP 475)."""
    while True:
        try:
            call("flock", fd, op)
            return
        except InterruptedError:
            continue


def add_seals(fd: int, seals: int) -> None:
    """fcntl(fd, F_ADD_SEALS, seals) on a memfd."""
    call("fcntl", fd, F_ADD_SEALS, seals, what="F_ADD_SEALS")


def private_mount_namespace() -> None:
    """Move the calling process into a new mount namespace that shares nothing back."""
    unshare(CLONE_NEWNS)
    mount(None, "/", None, MS_REC | MS_PRIVATE)


# ---- namespaces and the new mount API (Linux 5.2+ / 5.12+ for mount_setattr) -----------
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = posix.O_CLOEXEC
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC = 0x1, 0x2, 0x4, 0x8


def _u64s(*values: int) -> bytes:
    """A struct of u64 fields, as read-only input to the kernel."""
    return b"".join(v.to_bytes(8, sys.byteorder) for v in values)


def openat2(dirfd: int, path: str, flags: int, resolve: int) -> int:
    # struct open_how {u64 flags, mode, resolve}
    how = _u64s(flags, 0, resolve)
    return call("openat2", dirfd, _path(path), how, len(how), path=path)


def setns(fd: int, nstype: int) -> None:
    call("setns", fd, nstype)


def open_tree(dirfd: int, path: str, flags: int) -> int:
    return call("open_tree", dirfd, _path(path), flags)


def move_mount(from_fd: int, to_fd: int) -> None:
    call("move_mount", from_fd, b"", to_fd, b"", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)


def mount_setattr(fd: int, attr_set: int, propagation: int = 0) -> None:
    # struct mount_attr {u64 attr_set, attr_clr, propagation, userns_fd}
    buf = _u64s(attr_set, 0, propagation, 0)
    call("mount_setattr", fd, b"", AT_EMPTY_PATH | AT_RECURSIVE, buf, 32)


def bpf(cmd: int, attr: bytearray) -> int:
    """bpf(2) with a bpf_attr the kernel may fill in (in place)."""
    return call("bpf", cmd, attr, len(attr))
