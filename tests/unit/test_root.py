"""sysio.root.Root: a rootfs held by one fd; no path leads out, no FIFO blocks (issue 13, 3)."""
import errno
import os
import time

import pytest

from nvbind.sysio.root import Root


@pytest.fixture
def rootfs(tmp_path):
    r = tmp_path / "rootfs"
    (r / "etc").mkdir(parents=True)
    os.mkfifo(r / "etc/fifo")
    (r / "etc/file").write_text("hello")
    os.symlink("/etc/file", r / "etc/abs-link")
    outside = tmp_path / "outside"
    outside.write_text("host secret")
    os.symlink(str(outside), r / "etc/escape")
    os.symlink("../../../../outside", r / "etc/dotdot")
    return r


def test_open_file_never_blocks_and_wants_a_regular_file(rootfs):
    with Root.open(str(rootfs)) as root:
        t0 = time.monotonic()
        with pytest.raises(OSError) as e:
            root.open_file("/etc/fifo")
        assert e.value.errno == errno.EINVAL and time.monotonic() - t0 < 1
        assert root.read_text("/etc/file") == "hello"
        for link in ("/etc/abs-link", "/etc/escape", "/etc/dotdot"):
            with pytest.raises(OSError):
                root.open_file(link)            # the last component is never followed


def test_write_atomic_replaces_whatever_is_there(rootfs, tmp_path):
    with Root.open(str(rootfs)) as root:
        root.write_atomic("/etc/fifo", "x\n")
        root.write_atomic("/etc/escape", "y\n")
        root.write_atomic("/new/dir/file", "z\n")
        os.mkdir(rootfs / "etc/adir")
        with pytest.raises(OSError):
            root.write_atomic("/etc/adir", "no")
    assert (rootfs / "etc/fifo").read_text() == "x\n"
    assert (rootfs / "etc/escape").read_text() == "y\n" and not (rootfs / "etc/escape").is_symlink()
    assert (tmp_path / "outside").read_text() == "host secret"
    assert (rootfs / "new/dir/file").read_text() == "z\n"
    assert not [n for n in os.listdir(rootfs / "etc") if ".nvbind-" in n]


def test_directories_stay_inside(rootfs, tmp_path):
    os.symlink(str(tmp_path), rootfs / "hostdir")
    with Root.open(str(rootfs)) as root:
        try:
            root.mkdir_p("/hostdir/made")       # resolved inside the rootfs, or refused
        except OSError:
            pass
        assert not (tmp_path / "made").exists()
        assert "file" in root.listdir("/etc")
        with pytest.raises(OSError):
            root.listdir("/etc/fifo")
        again = root.reopen()
        assert os.path.samestat(os.fstat(again.fd), os.fstat(root.fd))
        again.close()
