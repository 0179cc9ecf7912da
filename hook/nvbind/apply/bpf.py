"""cgroup v2 device rules: extend the container's BPF device program.

On cgroup v2 the device cgroup is an eBPF program (BPF_PROG_TYPE_CGROUP_DEVICE) that the
runtime attached to the container's cgroup. We read the attached program back
(BPF_PROG_QUERY, BPF_PROG_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD), load a new one made of a
short prologue that allows exactly our (char, major, minor, rw) devices followed by the
old program's instructions unchanged, and swap it in atomically (BPF_PROG_ATTACH with
BPF_F_ALLOW_MULTI|BPF_F_REPLACE). Anything the old program allowed or denied stays so.
Device programs use no maps and the ctx is not rewritten, so the translated instructions
load again as they are.
"""

import os
import struct

from nvbind.sysio import syscalls as nsys
from nvbind.errors import NvbindError

BPF_PROG_LOAD, BPF_PROG_ATTACH = 5, 8
BPF_PROG_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD, BPF_PROG_QUERY = 13, 15, 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI, BPF_F_REPLACE = 2, 4
DEVCG_DEV_CHAR = 2
DEVCG_ACC_MKNOD = 1
ATTR_SIZE = 144


def _insn(code, dst=0, src=0, off=0, imm=0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


LDXW, AND32K, RSH32K, JNEK, MOV64K, MOV64X, AND64K, EXIT = 0x61, 0x54, 0x74, 0x55, 0xB7, 0xBF, 0x57, 0x95


def prologue(devices: list[tuple[int, int]]) -> bytes:
    """Allow rw (not mknod) on char major:minor for each device; else fall through."""
    rules = []
    for major, minor in devices:
        rules += [_insn(JNEK, 4, imm=major, off=3), _insn(JNEK, 5, imm=minor, off=2),
                  _insn(MOV64K, 0, imm=1), _insn(EXIT)]
    head = [
        _insn(LDXW, 2, 1, 0), _insn(AND32K, 2, imm=0xFFFF),      # r2 = type
        _insn(LDXW, 3, 1, 0), _insn(RSH32K, 3, imm=16),          # r3 = access
        _insn(LDXW, 4, 1, 4), _insn(LDXW, 5, 1, 8),              # r4 = major, r5 = minor
        _insn(MOV64X, 0, 3), _insn(AND64K, 0, imm=DEVCG_ACC_MKNOD),
    ]
    # skip all rules when the type is not char or mknod is asked for
    skip = len(rules)
    head += [_insn(JNEK, 2, imm=DEVCG_DEV_CHAR, off=skip + 1), _insn(JNEK, 0, imm=0, off=skip)]
    return b"".join(head + rules)


def _attr(fmt: str, *vals) -> bytearray:
    a = bytearray(ATTR_SIZE)
    struct.pack_into(fmt, a, 0, *vals)
    return a


def attached(cgroup_fd: int) -> list[int]:
    ids = bytearray(4 * 64)
    a = _attr("<IIIIQI", cgroup_fd, BPF_CGROUP_DEVICE, 0, 0, nsys.address(ids), 64)
    nsys.bpf(BPF_PROG_QUERY, a)
    count = struct.unpack_from("<I", a, 24)[0]
    return list(struct.unpack_from(f"<{count}I", ids))


def program_fd(prog_id: int) -> int:
    return nsys.bpf(BPF_PROG_GET_FD_BY_ID, _attr("<I", prog_id))


def instructions(prog_fd: int) -> bytes:
    info = bytearray(256)
    nsys.bpf(BPF_OBJ_GET_INFO_BY_FD, _attr("<IIQ", prog_fd, 256, nsys.address(info)))
    ptype, _pid = struct.unpack_from("<II", info, 0)
    xlated_len = struct.unpack_from("<I", info, 20)[0]
    if ptype != BPF_PROG_TYPE_CGROUP_DEVICE:
        raise NvbindError(f"attached program has type {ptype}, not a device program")
    if not xlated_len:
        raise NvbindError("the kernel does not show the device program's instructions")
    code = bytearray(xlated_len)
    info2 = bytearray(256)
    struct.pack_into("<II", info2, 16, 0, xlated_len)
    struct.pack_into("<Q", info2, 32, nsys.address(code))
    nsys.bpf(BPF_OBJ_GET_INFO_BY_FD, _attr("<IIQ", prog_fd, 256, nsys.address(info2)))
    return bytes(code)


def load(code: bytes) -> int:
    insns = bytearray(code)
    lic = bytearray(b"Apache-2.0\0")
    log = bytearray(65536)
    a = _attr("<IIQQIIQ", BPF_PROG_TYPE_CGROUP_DEVICE, len(code) // 8, nsys.address(insns),
              nsys.address(lic), 1, len(log), nsys.address(log))
    struct.pack_into("<16s", a, 48, b"nvbind_devices")
    try:
        return nsys.bpf(BPF_PROG_LOAD, a)
    except OSError as e:
        msg = log.split(b"\0", 1)[0].decode(errors="replace").strip().splitlines()
        raise NvbindError(f"loading the device program failed: {e.strerror}"
                          + (f" ({msg[-1]})" if msg else "")) from None


def allow(cgroup_dir: str, devices: list[tuple[int, int]]) -> str:
    """Replace the device program on cgroup_dir with one that also allows `devices`."""
    cfd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fds = []
    try:
        ids = attached(cfd)
        if not ids:
            return f"no device program on {cgroup_dir}: every device is already allowed there"
        # the runtime attaches one program; with several, each must allow: extend them all
        for pid in ids:
            old = program_fd(pid)
            fds.append(old)
            new = load(prologue(devices) + instructions(old))
            fds.append(new)
            a = _attr("<IIIII", cfd, new, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI | BPF_F_REPLACE, old)
            nsys.bpf(BPF_PROG_ATTACH, a)
        return f"replaced {len(ids)} device program(s) on {cgroup_dir}"
    except OSError as e:
        raise NvbindError(f"cgroup v2 device rules for {cgroup_dir} failed: {e}") from None
    finally:
        for fd in fds:
            os.close(fd)
        os.close(cfd)
