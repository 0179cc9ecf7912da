"""Just enough ELF reading to learn a library's class, machine and DT_SONAME."""

import struct
from nvbind.record import Record

EM_386, EM_X86_64, EM_AARCH64 = 3, 62, 183
MACHINE_ARCH = {EM_X86_64: "x86_64", EM_386: "i386", EM_AARCH64: "aarch64"}


class ElfInfo(Record):
    __slots__ = ("bits", "arch", "soname")


def read(path: str, limit: int = 64 << 20) -> ElfInfo | None:
    """ElfInfo for an ELF file, None if the file is not ELF (or unreadable)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 52 or head[:4] != b"\x7fELF" or head[5] != 1:
                return None
            bits = 64 if head[4] == 2 else 32
            (machine,) = struct.unpack_from("<H", head, 18)
            arch = MACHINE_ARCH.get(machine)
            try:
                soname = _soname(f, bits, head, limit)
            except (struct.error, ValueError, OSError):
                soname = None
            return ElfInfo(bits, arch, soname)
    except OSError:
        return None


def _soname(f, bits, head, limit):
    if bits == 64:
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        ph = struct.Struct("<IIQQQQQQ")   # type flags offset vaddr paddr filesz memsz align
        dyn = struct.Struct("<qQ")
    else:
        phoff, = struct.unpack_from("<I", head, 28)
        phentsize, phnum = struct.unpack_from("<HH", head, 42)
        ph = struct.Struct("<IIIIIIII")   # type offset vaddr paddr filesz memsz flags align
        dyn = struct.Struct("<iI")
    if phnum > 256 or phentsize < ph.size:
        return None
    f.seek(phoff)
    table = f.read(phentsize * phnum)
    loads, dynamic = [], None
    for i in range(phnum):
        e = ph.unpack_from(table, i * phentsize)
        if bits == 64:
            p_type, _, off, vaddr, _, filesz, _, _ = e
        else:
            p_type, off, vaddr, _, filesz, _, _, _ = e
        if p_type == 1:
            loads.append((vaddr, off, filesz))
        elif p_type == 2:
            dynamic = (off, filesz)
    if dynamic is None or dynamic[1] > limit:
        return None
    f.seek(dynamic[0])
    raw = f.read(dynamic[1])
    strtab = soname_off = None
    for i in range(len(raw) // dyn.size):
        tag, val = dyn.unpack_from(raw, i * dyn.size)
        if tag == 0:
            break
        if tag == 5:
            strtab = val
        elif tag == 14:
            soname_off = val
    if strtab is None or soname_off is None:
        return None
    for vaddr, off, filesz in loads:
        if vaddr <= strtab < vaddr + filesz:
            f.seek(off + (strtab - vaddr) + soname_off)
            name = f.read(256).split(b"\0", 1)[0]
            return name.decode("ascii", "replace") or None
    return None
