import os

import pytest

from nvbind.sysio import root as fsroot


def test_resolve_keeps_links_inside_root(tmp_path):
    r = tmp_path
    (r / "usr/lib").mkdir(parents=True)
    (r / "usr/lib/real.so").write_text("x")
    os.symlink("/usr/lib/real.so", r / "usr/lib/abs.so")
    os.symlink("../../../../../usr/lib/real.so", r / "usr/lib/dotdot.so")
    os.symlink("/proc/1/root/etc/passwd", r / "usr/lib/escape.so")
    assert fsroot.resolve(str(r), "/usr/lib/abs.so") == "/usr/lib/real.so"
    assert fsroot.resolve(str(r), "/usr/lib/dotdot.so") == "/usr/lib/real.so"
    assert fsroot.resolve(str(r), "/usr/lib/escape.so") is None   # no /proc in the root


def test_resolve_link_loop(tmp_path):
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    assert fsroot.resolve(str(tmp_path), "/a") is None


@pytest.mark.parametrize("use_openat2", [True, False])
def test_symlink_never_lands_outside_the_root(tmp_path, monkeypatch, use_openat2):
    monkeypatch.setattr(fsroot, "_has_openat2", None if use_openat2 else False)
    if use_openat2 and not fsroot.openat2_available():
        pytest.skip("openat2 not available on this kernel")
    rootfs, host = tmp_path / "rootfs", tmp_path / "hostdir"
    (rootfs / "lib").mkdir(parents=True)
    host.mkdir()
    os.symlink(str(host), rootfs / "lib/foo")          # CVE-2024-0134 shape
    os.symlink("/../../../" + str(host), rootfs / "lib/bar")
    fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for link in ("/lib/foo/libfoo.so", "/lib/bar/libfoo.so"):
            try:
                fsroot.symlink(fd, link, "libfoo.so.1")
            except OSError:
                pass   # refusing is fine; writing on the host is not
        assert os.listdir(host) == []
        assert fsroot.symlink(fd, "/usr/lib64/libcuda.so.1", "libcuda.so.550") \
            == "created /usr/lib64/libcuda.so.1 -> libcuda.so.550"
        assert os.readlink(rootfs / "usr/lib64/libcuda.so.1") == "libcuda.so.550"
        assert "already present" in fsroot.symlink(fd, "/usr/lib64/libcuda.so.1", "libcuda.so.550")
        (rootfs / "usr/lib64/libreal.so.1").write_text("image file")
        assert "kept" in fsroot.symlink(fd, "/usr/lib64/libreal.so.1", "x")
        assert (rootfs / "usr/lib64/libreal.so.1").read_text() == "image file"
    finally:
        os.close(fd)
