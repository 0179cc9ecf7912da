"""The few raw system calls nvbind needs (unshare, mount, setns, prctl, openat2, the new
mount API, bpf, flock and memfd seals), in one place.

Foreign calls go through `_ctypes`, the C core of the standard `ctypes` package, with the
two scalar types they need declared here: importing `ctypes` itself (struct, _endian and
every c_* type) cost each createContainer and createRuntime hook ~3 ms. Every integer
argument is passed as a C long (`_arg`), so no 64-bit parameter ever reads a 32-bit value's
undefined upper half. Only the BPF device filter (apply/bpf.py) still needs full ctypes,
for its string buffers.
"""

import _ctypes
import os
import sys

CLONE_NEWNS = 0x00020000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
RTLD_NOW = 2


class _Long(_ctypes._SimpleCData):
    _type_ = "l"


class _Int(_ctypes._SimpleCData):
    _type_ = "i"


class _Fn(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = _Int


class _LongFn(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = _Long


class _Libc:
    """libc's functions by name (the process's own libc: dlopen(NULL)); int results,
    `syscall` a long one."""

    def __init__(self):
        self._handle = _ctypes.dlopen(None, RTLD_NOW)
        self._fns = {}

    def __getattr__(self, name):
        fn = self._fns.get(name)
        if fn is None:
            fn = self._fns[name] = (_LongFn if name == "syscall" else _Fn)((name, self))
        return lambda *args: fn(*[_arg(a) for a in args])


def _arg(a):
    return _Long(a) if isinstance(a, int) else a


_libc = None


def libc():
    global _libc
    if _libc is None:
        _libc = _Libc()
    return _libc


def _check(ret, what):
    if ret != 0:
        err = _ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(libc().unshare(flags), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None):
    enc = lambda s: None if s is None else os.fsencode(s)  # noqa: E731
    _check(libc().mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


LOCK_EX = 2
F_ADD_SEALS = 1033
F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE = 0x1, 0x2, 0x4, 0x8


def flock(fd: int, op: int) -> None:
    """flock(2), retried when a signal interrupts it (as fcntl.flock is, PEP 475)."""
    import errno
    while libc().flock(fd, op) != 0:
        err = _ctypes.get_errno()
        if err != errno.EINTR:
            raise OSError(err, f"flock: {os.strerror(err)}")


def add_seals(fd: int, seals: int) -> None:
    """fcntl(fd, F_ADD_SEALS, seals) on a memfd."""
    _check(libc().fcntl(fd, F_ADD_SEALS, seals), "F_ADD_SEALS")


def private_mount_namespace() -> None:
    """Move the calling process into a new mount namespace that shares nothing back."""
    unshare(CLONE_NEWNS)
    mount(None, "/", None, MS_REC | MS_PRIVATE)


# ---- namespaces and the new mount API (Linux 5.2+ / 5.12+ for mount_setattr) -----------
# openat2 (437) and the new mount API share the generic numbers on x86_64 and aarch64
NR = {"setns": 308, "open_tree": 428, "move_mount": 429, "mount_setattr": 442, "bpf": 321,
      "openat2": 437}
if os.uname().machine in ("aarch64", "arm64"):
    NR.update(setns=268, bpf=280)

OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC = 0x1, 0x2, 0x4, 0x8


def _sys(name, *args, path: str | None = None):
    """The raw system call; OSError (naming `path` when given) when it fails."""
    ret = libc().syscall(NR[name], *args)
    if ret < 0:
        err = _ctypes.get_errno()
        if path is not None:
            raise OSError(err, os.strerror(err), path)
        raise OSError(err, f"{name}: {os.strerror(err)}")
    return ret


def _u64s(*values: int) -> bytes:
    """A struct of u64 fields, as read-only input to the kernel."""
    return b"".join(v.to_bytes(8, sys.byteorder) for v in values)


def openat2(dirfd: int, path: str, flags: int, resolve: int) -> int:
    # struct open_how {u64 flags, mode, resolve}
    how = _u64s(flags, 0, resolve)
    return _sys("openat2", dirfd, os.fsencode(path), how, len(how), path=path)


def setns(fd: int, nstype: int) -> None:
    _check(libc().setns(fd, nstype), "setns")


def open_tree(dirfd: int, path: str, flags: int) -> int:
    return _sys("open_tree", dirfd, os.fsencode(path), flags)


def move_mount(from_fd: int, to_fd: int) -> None:
    _sys("move_mount", from_fd, b"", to_fd, b"", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)


def mount_setattr(fd: int, attr_set: int, propagation: int = 0) -> None:
    # struct mount_attr {u64 attr_set, attr_clr, propagation, userns_fd}
    buf = _u64s(attr_set, 0, propagation, 0)
    _sys("mount_setattr", fd, b"", AT_EMPTY_PATH | AT_RECURSIVE, buf, 32)


def bpf(cmd: int, attr: bytes | bytearray) -> tuple[int, bytes]:
    """bpf(2) with a bpf_attr given as bytes; returns (result, attr as the kernel left it)."""
    import ctypes
    buf = ctypes.create_string_buffer(bytes(attr), len(attr))
    ret = _sys("bpf", cmd, buf, len(attr))
    return ret, buf.raw
