"""doors/shim._which is shutil.which (POSIX) without importing shutil: same answers."""
import os
import shutil

from nvbind.doors.shim import _which


def test_same_answers_as_shutil_which(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "rt").write_text("#!/bin/sh\n")          # not executable: skipped
    (b / "rt").write_text("#!/bin/sh\n")
    (b / "rt").chmod(0o755)
    (a / "dir").mkdir(mode=0o755)                 # a directory: skipped
    (b / "dir").write_text("")
    (b / "dir").chmod(0o755)
    paths = [f"{a}:{b}", f"{b}:{a}", f"{a}", f"{a}::{b}", f"{b}:{b}", "/usr/sbin:/usr/bin:/sbin:/bin"]
    names = ["rt", "dir", "missing", str(b / "rt"), str(a / "rt"), "sh", "runc", "./rt"]
    cwd = os.getcwd()
    os.chdir(b)
    try:
        for p in paths:
            for n in names:
                assert _which(n, p) == shutil.which(n, path=p), (n, p)
    finally:
        os.chdir(cwd)
