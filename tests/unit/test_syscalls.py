"""nvbind.sysio.syscalls: the raw system calls, through both ways they are made.

The frozen tree makes them through _nvbind_sys, a module built into its launcher
(packaging/frontend/nvbind_sys.c); source runs through libc's syscall() by _ctypes. Here
the same C file is built as an extension module, and every check runs on both; the
frozen tree's own hooks (tests/e2e: createContainer, createRuntime with runc and crun)
make the calls for real through the launcher.
"""

import errno
import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sysconfig

import pytest

from nvbind.sysio import syscalls

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE = os.path.join(REPO, "packaging", "frontend", "nvbind_sys.c")


def _cc() -> str:
    cc = shutil.which("gcc")
    assert cc, "gcc is needed (make setup installs it)"
    return cc


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    """packaging/frontend/nvbind_sys.c built as an extension module."""
    out = tmp_path_factory.mktemp("nvbind_sys") / "_nvbind_sys.so"
    subprocess.run([_cc(), "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror",
                    f"-I{sysconfig.get_paths()['include']}", "-o", str(out), SOURCE],
                   check=True, timeout=120)
    loader = importlib.machinery.ExtensionFileLoader("_nvbind_sys", str(out))
    spec = importlib.util.spec_from_file_location("_nvbind_sys", str(out), loader=loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


@pytest.fixture(params=["native", "ctypes"])
def way(request, monkeypatch):
    """syscalls with its calls made one way or the other."""
    if request.param == "native":
        mod = request.getfixturevalue("native")
        monkeypatch.setattr(syscalls, "_raw", mod.syscall)
        monkeypatch.setattr(syscalls, "address", mod.address)
        monkeypatch.setattr(syscalls, "NR", mod.NR)
    else:
        monkeypatch.setattr(syscalls, "_raw", syscalls._ctypes_syscall())
        monkeypatch.setattr(syscalls, "address", syscalls._ctypes_address)
    return request.param


@pytest.fixture(scope="module")
def machine_numbers(tmp_path_factory):
    """This machine's system call numbers, from its own <sys/syscall.h>."""
    d = tmp_path_factory.mktemp("nr")
    names = sorted(syscalls.NR) + ["getcwd", "getpid"]
    src = d / "nr.c"
    src.write_text("#include <stdio.h>\n#include <sys/syscall.h>\nint main(void) {\n"
                   + "".join(f'    printf("{n} %d\\n", (int)SYS_{n});\n' for n in names)
                   + "    return 0;\n}\n")
    subprocess.run([_cc(), "-o", str(d / "nr"), str(src)], check=True, timeout=120)
    out = subprocess.run([str(d / "nr")], check=True, capture_output=True, text=True, timeout=30)
    return {n: int(v) for n, v in (line.split() for line in out.stdout.splitlines())}


def test_numbers_are_this_machines(machine_numbers, native):
    # the built-in module's (compiled from <sys/syscall.h>) and the fallback's own table
    assert native.NR == {n: machine_numbers[n] for n in native.NR}
    table = syscalls._NR[syscalls.MACHINE]
    assert table == {n: machine_numbers[n] for n in table} and set(table) == set(native.NR)


def test_results_and_errors(way, tmp_path):
    f = tmp_path / "lock"
    fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        syscalls.flock(fd, syscalls.LOCK_EX)        # 0: no error
        # a memfd without MFD_ALLOW_SEALING refuses seals: EPERM, named
        mfd = os.memfd_create("t", 0)
        with pytest.raises(PermissionError, match="F_ADD_SEALS"):
            syscalls.add_seals(mfd, syscalls.F_SEAL_WRITE)
        os.close(mfd)
        mfd = os.memfd_create("t", os.MFD_ALLOW_SEALING)
        syscalls.add_seals(mfd, syscalls.F_SEAL_WRITE)
        with pytest.raises(PermissionError):
            os.write(mfd, b"x")                     # the seal took
        os.close(mfd)
    finally:
        os.close(fd)
    with pytest.raises(OSError) as e:
        syscalls.setns(-1, 0)
    assert e.value.errno == errno.EBADF and "setns" in str(e.value)
    # a result that is a descriptor, and a path that names itself in the error
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        (tmp_path / "x").write_text("hi")
        fd = syscalls.openat2(dfd, "x", os.O_RDONLY | os.O_CLOEXEC, 0x08)   # RESOLVE_IN_ROOT
        assert os.read(fd, 2) == b"hi"
        os.close(fd)
        with pytest.raises(FileNotFoundError) as e:
            syscalls.openat2(dfd, "missing", os.O_RDONLY, 0x08)
        assert e.value.filename == "missing"
    finally:
        os.close(dfd)


def test_arguments_that_are_not_what_the_kernel_reads(way):
    # beyond a C long: refused before either way could wrap or truncate it
    with pytest.raises(OverflowError):
        syscalls.setns(1 << 64, 0)
    with pytest.raises(TypeError):
        syscalls.call("setns", memoryview(b"x"), 0)
    with pytest.raises(TypeError):
        syscalls.address(b"read-only")


def test_a_path_with_a_nul_is_refused(way, tmp_path):
    # the kernel would read the path only up to the NUL: "x\0/../../etc" would be "x"
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        (tmp_path / "x").write_text("hi")
        with pytest.raises(ValueError, match="NUL"):
            syscalls.openat2(dfd, "x\0/../escape", os.O_RDONLY, 0x08)
    finally:
        os.close(dfd)


def test_the_kernel_fills_a_bytearray(way, machine_numbers):
    buf = bytearray(4096)
    n = syscalls._raw(machine_numbers["getcwd"], buf, len(buf))
    assert n > 0 and bytes(buf[:n - 1]) == os.fsencode(os.getcwd())
    # and a pointer to one inside a structure (bpf's attributes): the address is its bytes'
    addr = syscalls.address(buf)
    assert isinstance(addr, int) and addr > 0


def test_bad_arguments(native, machine_numbers):
    getpid = machine_numbers["getpid"]
    with pytest.raises(TypeError):
        native.syscall()
    with pytest.raises(TypeError):
        native.syscall(getpid, *range(7))               # at most six arguments
    with pytest.raises(TypeError):
        native.syscall(getpid, "a string")              # text has no address
    with pytest.raises(OverflowError):
        native.syscall(getpid, 1 << 64)
    with pytest.raises(TypeError):                  # a slice is no NUL-terminated path
        native.syscall(getpid, memoryview(b"/etc/passwdXXXX")[:11])
    with pytest.raises(TypeError):
        native.address(b"read-only")                # only a buffer the kernel may fill
    assert native.syscall(getpid) == os.getpid()
