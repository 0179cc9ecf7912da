import os
import struct

import pytest

from conftest import CTK, needs_shared
from nvbind.host import ldcache


def _cache(entries, strings_first=b""):
    """Build a glibc-ld.so.cache1.1 file from [(flags, key, value)]."""
    strings = bytearray(strings_first)
    table = []
    header_len = ldcache.HEADER.size + len(entries) * ldcache.ENTRY.size
    for flags, key, value in entries:
        k = header_len + len(strings)
        strings += key.encode() + b"\0"
        v = header_len + len(strings)
        strings += value.encode() + b"\0"
        table.append(ldcache.ENTRY.pack(flags, k, v, 0, 0))
    head = ldcache.HEADER.pack(ldcache.NEW_MAGIC, len(entries), len(strings), 2, 0)
    return head + b"".join(table) + bytes(strings)


def test_round_trip_and_arch_filter():
    data = _cache([(0x0303, "libcuda.so.1", "/usr/lib64/libcuda.so.1"),
                   (0x0003, "libcuda.so.1", "/usr/lib32/libcuda.so.1"),
                   (0x0a03, "libcuda.so.1", "/usr/lib/aarch64/libcuda.so.1")])
    entries = ldcache.parse(data)
    assert [e[0] for e in entries] == ["libcuda.so.1"] * 3
    assert ldcache.for_arch(entries, "x86_64") == [("libcuda.so.1", "/usr/lib64/libcuda.so.1")]
    assert ldcache.for_arch(entries, "i386") == [("libcuda.so.1", "/usr/lib32/libcuda.so.1")]
    assert ldcache.for_arch(entries, "aarch64") == [("libcuda.so.1", "/usr/lib/aarch64/libcuda.so.1")]


@needs_shared
def test_real_743_entry_cache():
    with open(os.path.join(CTK, "rootfs-1/etc/ld.so.cache"), "rb") as f:
        entries = ldcache.parse(f.read())
    assert len(entries) == 743
    x86 = dict(ldcache.for_arch(entries, "x86_64"))
    assert x86["libcuda.so.1"] == "/lib/x86_64-linux-gnu/libcuda.so.1"
    assert x86["libnvidia-ml.so.1"] == "/lib/x86_64-linux-gnu/libnvidia-ml.so.1"
    i386 = dict(ldcache.for_arch(entries, "i386"))
    assert all(not p.startswith("/lib/x86_64") for p in i386.values())
    assert len(x86) + len(i386) < 743


def test_host_cache_parses():
    with open("/etc/ld.so.cache", "rb") as f:
        entries = ldcache.parse(f.read())
    assert any(name == "libc.so.6" for name, _, _ in entries)


@pytest.mark.parametrize("mangle, message", [
    (lambda d: b"XXXX" + d[4:], "bad magic"),
    (lambda d: d[:30], "truncated"),
    (lambda d: d[:ldcache.HEADER.size + 10], "truncated"),
    (lambda d: d[:20] + struct.pack("<I", 1 << 30) + d[24:], "implausible"),
    (lambda d: d[:20] + struct.pack("<I", 50000) + d[24:], "truncated"),
    (lambda d: d[:-5], "unterminated"),
    (lambda d: d[:ldcache.HEADER.size + 4] + struct.pack("<I", 10 ** 9) + d[ldcache.HEADER.size + 8:],
     "past the end"),
])
def test_corrupt_caches_are_refused(mangle, message):
    data = _cache([(0x0303, "libcuda.so.1", "/usr/lib64/libcuda.so.1")])
    with pytest.raises(ldcache.CacheError, match=message):
        ldcache.parse(mangle(data))


def test_old_format_prefix_is_skipped():
    new = _cache([(0x0303, "libfoo.so.1", "/lib/libfoo.so.1")])
    old = ldcache.OLD_MAGIC + b"\0" + struct.pack("<I", 0)
    old += b"\0" * (((len(old) + 7) & ~7) - len(old))
    # string offsets of the new format count from the new header, so they stay valid
    assert ldcache.parse(old + new) == [("libfoo.so.1", 0x0303, "/lib/libfoo.so.1")]
