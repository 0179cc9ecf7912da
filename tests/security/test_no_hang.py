"""No hook outlives its deadline (issue 13, 3). A FIFO at every path nvbind opens in a
rootfs, through every door: createContainer (after precreate, via real podman),
createRuntime (via real runc) and the createContainer entry alone; the container fails,
or succeeds ignoring the FIFO, in bounded time, and no process is left behind. And a
child whose hook is SIGKILLed (as runc does at the hook's timeout) dies with it."""
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from conftest import nvbind_cmd
from nvbind.sysio import child as bounded

HOST_LIB = "usr/lib64/libcuda.so.550.54.14"


def leftovers(marker: str) -> list[str]:
    """Processes (other than this test) whose command line, working directory, root or an
    open file names `marker` (a path unique to this test)."""
    out = []
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            links = [os.readlink(f"/proc/{pid}/{x}") for x in ("cwd", "root")]
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
                except OSError:
                    pass
        except OSError:
            continue
        if marker in cmd or any(marker in x for x in links):
            out.append(f"{pid}: {cmd[:200]}")
    return out


def settle(marker, seconds=3.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        left = leftovers(marker)
        if not left:
            return []
        time.sleep(0.1)
    return leftovers(marker)


def compat_lib(rootfs, tmp_path, version="560.35.03"):
    compat = rootfs / "usr/local/cuda/compat"
    compat.mkdir(parents=True, exist_ok=True)
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "tools/csrc/libcuda.c")
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o",
                    str(compat / f"libcuda.so.{version}"), src], check=True)


# FIFO placements: (name, path in the rootfs, needs a newer compat libcuda, outcome)
#   outcome "ok": ignored or replaced; "fail": refused or killed at a deadline
CASES = [
    ("compat-conf", "etc/ld.so.conf.d/00-nvbind-cuda-compat.conf", True, "ok"),
    ("dropin", "etc/ld.so.conf.d/00-nvbind.conf", False, "ok"),
    ("compat-dir", "usr/local/cuda/compat", False, "ok"),
    ("soname-link", "usr/lib64/libcuda.so.1", False, "ok"),
    ("ld-so-conf", "etc/ld.so.conf", False, "fail"),
    ("ld-so-cache-tmp", "etc/ld.so.cache~", False, "fail"),
    ("proc", "proc", False, "ok"),
]


def make_rootfs(image, dest, tmp_path, fifo, compat):
    subprocess.run(["cp", "-a", image, str(dest)], check=True)
    if compat:
        compat_lib(dest, tmp_path)
    p = dest / fifo
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.is_dir() and not p.is_symlink():
        os.rmdir(p)
    elif p.exists() or p.is_symlink():
        p.unlink()
    os.mkfifo(p)
    if fifo == "etc/ld.so.conf":
        pass
    return dest


@pytest.mark.parametrize("name,fifo,compat,outcome", CASES, ids=[c[0] for c in CASES])
def test_create_container_entry(live_env, tmp_path, name, fifo, compat, outcome):
    """The createContainer hook entry (as precreate, the shim and CDI write it), run the way
    a runtime runs it: state on stdin, stdout/stderr pipes read to EOF."""
    root, image = live_env
    rootfs = make_rootfs(image, tmp_path / "rootfs", tmp_path, fifo, compat)
    (rootfs / "usr/lib64").mkdir(exist_ok=True)
    subprocess.run(["cp", f"{root}/{HOST_LIB}", str(rootfs / "usr/lib64")], check=True)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"process": {"env": []}, "root": {"path": str(rootfs)}}))
    state = json.dumps({"ociVersion": "1.2.0", "id": "c", "status": "creating", "pid": 1,
                        "bundle": str(bundle)})
    t0 = time.monotonic()
    r = subprocess.run(nvbind_cmd() + ["--log", "off", "hook", "createContainer", "--folder", "/usr/lib64",
                                       "--link", "libcuda.so.550.54.14::/usr/lib64/libcuda.so.1",
                                       "--driver-version", "550.54.14"],
                       input=state, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"},
                       timeout=60)
    took = time.monotonic() - t0
    assert took < bounded.LDCONFIG + 5, took
    if outcome == "ok":
        assert r.returncode == 0, r.stderr
    else:
        # the hook became ldconfig (apply/ldcache.handover): the kernel's timer ends it
        assert r.returncode == -signal.SIGALRM, (r.returncode, r.stderr)
    assert settle(str(tmp_path)) == []
    if name == "compat-conf":
        conf = rootfs / fifo
        assert conf.is_file() and "/usr/local/cuda/compat" in conf.read_text()


# under runc, a FIFO kept at the soname link's path makes the host's ldconfig block (it is
# killed at its deadline), and runc itself refuses a FIFO at /proc: bounded either way
RUNC_CASES = [(n, f, c, "any" if n in ("soname-link", "proc") else o) for n, f, c, o in CASES]


@pytest.mark.parametrize("name,fifo,compat,outcome",
                         RUNC_CASES + [("mount-target", HOST_LIB, False, "fail-fast")],
                         ids=[c[0] for c in CASES] + ["mount-target"])
def test_create_runtime_via_runc(live_env, tmp_path, name, fifo, compat, outcome):
    import engines
    root, image = live_env
    rootfs = make_rootfs(image, tmp_path / "rootfs", tmp_path, fifo, compat)
    log = str(tmp_path / "nvbind.log")
    hooks = {"createRuntime": [engines.nvbind_hook("createRuntime", root, log)]}
    bundle = tmp_path / "b"
    bundle.mkdir()
    os.rename(rootfs, bundle / "rootfs-src")
    b = engines.make_bundle(str(bundle), str(bundle / "rootfs-src"), ["true"],
                            ["NVIDIA_VISIBLE_DEVICES=1"], hooks)
    subprocess.run(["rm", "-rf", str(bundle / "rootfs-src")])
    t0 = time.monotonic()
    r = engines.run_bundle(b, f"fifo-{uuid.uuid4().hex[:6]}", timeout=90)
    took = time.monotonic() - t0
    assert took < 30, took          # below the hook entry's timeout: nvbind's own deadline
    if outcome == "ok":
        assert r.returncode == 0, r.stderr
    elif outcome != "any":
        assert r.returncode != 0
        entry = json.loads(open(log).read().splitlines()[-1])
        assert entry["outcome"] == "error", entry
        if outcome == "fail-fast":
            assert "not the kind" in entry["error"] or "refusing" in entry["error"], entry
            assert took < 10
    assert settle(str(tmp_path)) == []


def test_podman_precreate_and_create_container(podman_env, tmp_path):
    """Through podman: precreate edits the config, runc runs the createContainer entry; an
    image with /etc/ld.so.conf as a FIFO fails in bounded time, `podman run` returns, and
    no process is left; the compat conf as a FIFO is replaced and the container runs."""
    import engines
    root, pm = podman_env
    byname = {c[0]: c for c in CASES}
    for name, fifo, compat, outcome in (byname["ld-so-conf"], byname["compat-conf"], byname["dropin"]):
        src = tmp_path / f"r-{name}"
        import testimage
        base = testimage.build(str(tmp_path / "base")) if not (tmp_path / "base").exists() else str(tmp_path / "base")
        make_rootfs(base, src, tmp_path, fifo, compat)
        tag = f"localhost/nvbind-fifo-{name}:{uuid.uuid4().hex[:6]}"
        pm.import_rootfs(str(src), image=tag)
        t0 = time.monotonic()
        r = pm.run(["true"], env={"NVIDIA_VISIBLE_DEVICES": "1"}, image=tag, timeout=90)
        took = time.monotonic() - t0
        assert took < 30 + 10, took
        if outcome == "ok":
            assert r.returncode == 0, r.stderr
        else:
            # runc's report of its hook: ldconfig (the hook process itself) ended by the
            # SIGALRM of its deadline
            assert r.returncode != 0 and "alarm clock" in r.stderr, r.stderr
        subprocess.run(pm.base() + ["rmi", "-f", tag], capture_output=True)
        assert settle(root) == [], name


def test_child_dies_with_its_hook(tmp_path):
    """ldconfig blocked on a FIFO, its hook SIGKILLed (runc at the hook's timeout): the
    child gets PR_SET_PDEATHSIG and dies too; nothing holds the hook's pipes."""
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    os.mkfifo(rootfs / "etc/ld.so.conf")
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from nvbind.apply import ldcache\n"
            "from nvbind.sysio.root import Root\n"
            "ldcache._run_sealed(ldcache.sealed_copy(ldcache.find_ldconfig()), "
            "['ldconfig', '-r', '.', '/usr/lib'], Root.open(%r), timeout=120)\n"
            % (os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "hook"),
               str(rootfs)))
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for _ in range(100):
        if len(leftovers(str(rootfs))) >= 2:
            break
        time.sleep(0.05)
    kids = leftovers(str(rootfs))
    assert len(kids) >= 2, kids         # the hook and its ldconfig child, blocked
    p.send_signal(signal.SIGKILL)
    t0 = time.monotonic()
    out = p.stdout.read()               # EOF at once: no child holds the pipe
    assert time.monotonic() - t0 < 3 and out == b""
    p.wait()
    assert settle(str(rootfs)) == []


def _forked(after_close):
    """A child that closes its end of the report pipe, then runs `after_close` and exits."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(w, b"report")
            os.close(w)
            after_close()
        finally:
            os._exit(7)
    os.close(w)
    return pid, r


def test_wait_reaps_a_child_as_it_exits_after_eof():
    """The report ends (EOF) before the child can be reaped: its exit status comes back,
    whatever the gap (the pidfd says when it has exited)."""
    pid, r = _forked(lambda: time.sleep(0.2))
    t0 = time.monotonic()
    status, out = bounded.wait(pid, r, 10)
    assert out == b"report" and os.waitstatus_to_exitcode(status) == 7
    assert 0.2 <= time.monotonic() - t0 < 5


def test_wait_kills_a_child_lingering_after_eof_at_the_deadline():
    """A child that closed its pipe but does not exit is killed at the deadline, reaped,
    and reported as timed out (None)."""
    pid, r = _forked(lambda: time.sleep(60))
    t0 = time.monotonic()
    status, out = bounded.wait(pid, r, 0.5)
    assert status is None and out == b"report"
    assert time.monotonic() - t0 < 5
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)                 # reaped already, nothing left
