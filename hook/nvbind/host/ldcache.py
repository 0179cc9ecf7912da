"""Reader for glibc's ld.so.cache ("glibc-ld.so.cache1.1"), written from the format.

Layout (little or big endian as the header's flags say; we accept the machine's own):
  header  : magic[17]="glibc-ld.so.cache" version[3]="1.1" u32 nlibs u32 len_strings
            u8 flags u8 pad[3] u32 extension_offset u32 unused[3]          (48 bytes)
  entries : nlibs × { i32 flags, u32 key, u32 value, u32 osversion, u64 hwcap } (24 bytes)
  strings : NUL-terminated, offsets counted from the start of the new-format header.
An old "ld.so-1.7.0" table may come first; the new header then follows it, 8-aligned.
"""

import struct

OLD_MAGIC = b"ld.so-1.7.0"
NEW_MAGIC = b"glibc-ld.so.cache1.1"
HEADER = struct.Struct("<20sIIB3xI12x")
ENTRY = struct.Struct("<iIIIQ")

FLAG_ELF_LIBC6 = 0x0003
FLAG_TYPE_MASK = 0x00FF
FLAG_REQUIRED_MASK = 0xFF00
# Architecture bits glibc puts in the required mask.
ARCH_FLAGS = {
    "x86_64": 0x0300,   # FLAG_X8664_LIB64
    "i386": 0x0000,     # plain libc6 entries: 32-bit x86
    "aarch64": 0x0A00,  # FLAG_AARCH64_LIB64
}
MAX_ENTRIES = 1 << 20


class CacheError(ValueError):
    pass


def parse(data: bytes) -> list[tuple[str, int, str]]:
    """[(soname, flags, path)] in cache order. Raises CacheError on anything malformed."""
    base = 0
    if data.startswith(OLD_MAGIC):
        if len(data) < 16:
            raise CacheError("truncated old-format header")
        (nold,) = struct.unpack_from("<I", data, 12)
        if nold > MAX_ENTRIES:
            raise CacheError(f"old-format entry count {nold} is implausible")
        base = 16 + nold * 12
        base = (base + 7) & ~7
    if data[base:base + 20] != NEW_MAGIC:
        raise CacheError("not a glibc-ld.so.cache1.1 file (bad magic)")
    if len(data) < base + HEADER.size:
        raise CacheError("truncated header")
    _, nlibs, len_strings, flags, _ext = HEADER.unpack_from(data, base)
    if flags not in (0, 2):  # 0: unknown (old glibc), 2: little endian; 3 = big endian
        raise CacheError(f"unsupported byte order flag {flags}")
    if nlibs > MAX_ENTRIES:
        raise CacheError(f"entry count {nlibs} is implausible")
    table = base + HEADER.size
    if len(data) < table + nlibs * ENTRY.size:
        raise CacheError(f"truncated: {nlibs} entries do not fit in {len(data)} bytes")
    out = []
    for i in range(nlibs):
        eflags, key, value, _osv, _hwcap = ENTRY.unpack_from(data, table + i * ENTRY.size)
        out.append((_string(data, base + key), eflags, _string(data, base + value)))
    return out


def _string(data: bytes, off: int) -> str:
    if off >= len(data):
        raise CacheError(f"string offset {off} past the end of the file")
    end = data.find(b"\0", off)
    if end < 0:
        raise CacheError(f"unterminated string at offset {off}")
    return data[off:end].decode("utf-8", "surrogateescape")


def for_arch(entries, arch: str) -> list[tuple[str, str]]:
    """[(soname, path)] of libc6 ELF entries built for `arch`."""
    want = ARCH_FLAGS[arch]
    return [
        (name, path)
        for name, flags, path in entries
        if flags & FLAG_TYPE_MASK == FLAG_ELF_LIBC6 and flags & FLAG_REQUIRED_MASK == want
    ]
