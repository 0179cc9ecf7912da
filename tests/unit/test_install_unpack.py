"""`nvbind install` unpacks the tree the one-file build carries with tarfile's "data"
filter, or, on a Python without it (before 3.11.4: Debian 12's own 3.11.2, which `make`
builds with on a stock Debian), with the same rules checked by nvbind itself."""
import io
import os
import tarfile

import pytest

from nvbind.admin import install
from nvbind.errors import NvbindError


def _tar(members) -> tarfile.TarFile:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, kind, extra in members:
            info = tarfile.TarInfo(name)
            info.type, info.mode = kind, 0o4755 if kind == tarfile.REGTYPE else 0o755
            data = b""
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = extra
            elif kind == tarfile.REGTYPE:
                data = extra.encode()
                info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return tarfile.open(fileobj=buf)


GOOD = [("nvbind-1", tarfile.DIRTYPE, None), ("nvbind-1/nvbind", tarfile.REGTYPE, "exe"),
        ("nvbind-1/_internal", tarfile.DIRTYPE, None),
        ("nvbind-1/_internal/libz.so", tarfile.SYMTYPE, "libz.so.1"),
        ("nvbind-1/_internal/libz.so.1", tarfile.REGTYPE, "lib")]
BAD = {"absolute": ("/etc/evil", tarfile.REGTYPE, "x"),
       "dotdot": ("nvbind-1/../../evil", tarfile.REGTYPE, "x"),
       "link out": ("nvbind-1/out", tarfile.SYMTYPE, "../../etc"),
       "absolute link": ("nvbind-1/abs", tarfile.SYMTYPE, "/etc/shadow"),
       "hard link out": ("nvbind-1/hard", tarfile.LNKTYPE, "../etc/passwd"),
       "device": ("nvbind-1/dev", tarfile.CHRTYPE, None),
       "fifo": ("nvbind-1/fifo", tarfile.FIFOTYPE, None)}


@pytest.fixture(params=["tarfile's filter", "nvbind's checks"])
def way(request, monkeypatch):
    if request.param == "nvbind's checks":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    elif not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python has no tarfile data filter")
    return request.param


def test_the_tree_unpacks_without_set_id_bits(way, tmp_path):
    install._extract(_tar(GOOD), str(tmp_path))
    exe = tmp_path / "nvbind-1" / "nvbind"
    assert exe.read_text() == "exe" and not os.stat(exe).st_mode & 0o7000
    assert os.readlink(tmp_path / "nvbind-1/_internal/libz.so") == "libz.so.1"


@pytest.mark.parametrize("bad", sorted(BAD))
def test_a_member_that_would_leave_the_tree_is_refused(way, tmp_path, bad):
    dest = tmp_path / "dest"
    dest.mkdir()
    try:
        install._extract(_tar(GOOD + [BAD[bad]]), str(dest))
        refused = False
    except (NvbindError, tarfile.TarError):
        refused = True
    # tarfile's filter makes an absolute name relative (it lands inside dest); every other
    # member, and all of them under nvbind's checks, refuse the unpacking
    assert refused or (way == "tarfile's filter" and bad == "absolute"
                       and (dest / "etc/evil").exists())
    assert not (tmp_path / "evil").exists() and not os.path.lexists(dest / "nvbind-1/out")
    if way == "nvbind's checks":        # refused before anything is written
        assert os.listdir(dest) == []
