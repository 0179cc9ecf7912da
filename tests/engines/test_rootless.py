"""Rootless podman (issue 14 item 4): a user with subuid/subgid ranges runs podman 4.3 itself.

Rootless podman cannot mknod: it bind-mounts the host's /dev/nvidia* into the container, so
the simulated host's nodes are put at the real /dev paths inside a private mount namespace
(tools/devoverlay.py); the host's /dev and mount table are checked unchanged after every
call. nvbind runs as the frozen executable (dist/nvbind, copied where the user can read
it), exactly as a user would install it. Its hooks run as uid 0 of podman's user namespace:
not root on the host. So:
* precreate and CDI give exactly GPU 1;
* caches and exclusive leases live in /run/user/UID/nvbind (the user's runtime directory),
  and the inventory cache is written once, then reused;
* without a per-user runtime directory an exclusive request is refused with one line that
  names the settings;
* the createRuntime (live) hook refuses with one line: it cannot write device cgroups.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
import uuid

import pytest

from conftest import IS_ROOT, REPO, mountinfo

pytestmark = pytest.mark.e2e
IMAGE = "localhost/nvbind-gpucheck:latest"
CHECK = ["gpucheck", "/dev/nvidia1", "/dev/nvidia0"]
DIST = os.path.join(REPO, "dist", "nvbind")


def _entry(exe, root, log, stage, args=()):
    return {"version": "1.0.0",
            "hook": {"path": exe, "args": ["nvbind", "--root", root, "--log", log, "hook", stage, *args],
                     "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "timeout": 30},
            "when": {"always": True}, "stages": [stage]}


class Env:
    pass


@pytest.fixture(scope="module", params=["cgroup-v1", "cgroup-v2"])
def rl(request):
    if not IS_ROOT:
        pytest.skip("rootless tests make a user and a simulated host: need root")
    for tool in ("podman", "runc", "newuidmap", "newgidmap", "runuser", "unshare"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed (make setup installs it)")
    if not os.path.exists(DIST):
        pytest.skip("dist/nvbind not built (make test builds it with `make dist`)")
    import rootless
    import simhost
    import testimage
    e = Env()
    e.dev_before, e.mounts_before = sorted(os.listdir("/dev")), mountinfo()
    e.user = rootless.User()
    # under /var/tmp, not pytest's 0700 tmp: the user must reach the host root and nvbind
    e.state = tempfile.mkdtemp(prefix="nvbind-rootless-", dir="/var/tmp")
    os.chmod(e.state, 0o755)
    e.root = f"{e.state}/host"
    simhost.build(e.root, gpus=2, mig=True, version="550.54.14", stale=True)
    os.makedirs(f"{e.state}/bin")
    e.exe = f"{e.state}/bin/nvbind"
    shutil.copy2(DIST, e.exe)
    os.chmod(e.exe, 0o755)
    # this machine boots hybrid (v1 devices); Debian 12 boots unified: both, podman's own
    # namespaces (its pause process) made in one or the other
    e.pm = rootless.RootlessPodman(e.user, e.state, e.root, cgroup2=request.param == "cgroup-v2")
    e.log = f"{e.pm.home}/nvbind.log"
    for name, stage, args in (("precreate", "precreate", ()), ("live", "createRuntime", ())):
        d = f"{e.state}/hooks-{name}"
        os.makedirs(d)
        with open(f"{d}/50-nvbind.json", "w") as f:
            json.dump(_entry(e.exe, e.root, e.log, stage, args), f)
        setattr(e, f"hooks_{name}", d)
    e.cache = f"{e.user.runtime_dir}/nvbind"
    shutil.rmtree(e.cache, ignore_errors=True)      # from an earlier run: start with none
    try:
        e.pm.import_rootfs(testimage.build(f"{e.state}/image-rootfs"), IMAGE)
        info = e.pm.podman(["info", "--format", "{{.Host.CgroupsVersion}} {{.Host.Security.Rootless}}"])
        assert info.stdout.split() == [request.param[-2:], "true"], info.stdout + info.stderr
        yield e
    finally:
        e.pm.close()
        shutil.rmtree(e.cache, ignore_errors=True)
        e.user.remove()


def _ours(mounts, state):
    """The mounts an overlay could leave behind: on /dev, under the state dir, the tmpfs
    (the rest of the table may change meanwhile: other tests on the machine)."""
    return [m for m in mounts if m.split()[1] == "/dev" or m.split()[1].startswith("/dev/")
            or state in m or "nvbind-devoverlay" in m]


def _host_unchanged(e):
    assert sorted(os.listdir("/dev")) == e.dev_before
    assert _ours(mountinfo(), e.state) == _ours(e.mounts_before, e.state)


def _log(e):
    try:
        with open(e.log) as f:
            return [json.loads(line) for line in f]
    except FileNotFoundError:
        return []


def _run(e, **kw):
    r, name = e.pm.run(image=IMAGE, **kw)
    _host_unchanged(e)
    return r, name


def test_precreate_gives_gpu1_and_caches_in_the_user_runtime_dir(rl):
    before = len(_log(rl))
    r, _ = _run(rl, args=CHECK, env={"NVIDIA_VISIBLE_DEVICES": "1"}, hooks_dir=rl.hooks_precreate)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "open /dev/nvidia1: ENXIO" in r.stdout and "open /dev/nvidia0: ENOENT" in r.stdout
    assert "dlopen libcuda.so.1: OK" in r.stdout
    new = _log(rl)[before:]
    pre = [x for x in new if x["stage"] == "precreate"]
    assert pre and pre[-1]["outcome"] == "ok" and pre[-1]["devices"], new
    assert "/dev/nvidia0" not in pre[-1]["devices"] and "/dev/nvidia1" in pre[-1]["devices"]
    assert not any("cannot write" in w for x in new for w in x.get("warnings", ())), new
    # the inventory cache: written by the hook (uid 0 in podman's namespace = the user)
    files = [n for n in os.listdir(rl.cache) if n.startswith("inventory-")]
    assert len(files) == 1, os.listdir(rl.cache)
    st = os.stat(f"{rl.cache}/{files[0]}")
    assert st.st_uid == rl.user.uid and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    assert not os.path.exists(f"/run/nvbind/{files[0]}")


def test_inventory_cache_is_reused(rl):
    _run(rl, args=["true"], env={"NVIDIA_VISIBLE_DEVICES": "1"}, hooks_dir=rl.hooks_precreate)
    files = [f"{rl.cache}/{n}" for n in os.listdir(rl.cache) if n.startswith("inventory-")]
    assert len(files) == 1
    st0 = os.stat(files[0])
    before = len(_log(rl))
    r, _ = _run(rl, args=CHECK, env={"NVIDIA_VISIBLE_DEVICES": "1"}, hooks_dir=rl.hooks_precreate)
    assert r.returncode == 0 and "open /dev/nvidia1: ENXIO" in r.stdout, r.stdout + r.stderr
    st1 = os.stat(files[0])
    # a stale or untrusted cache is rebuilt and rewritten (new inode by rename, new mtime)
    assert (st1.st_ino, st1.st_mtime_ns) == (st0.st_ino, st0.st_mtime_ns)
    assert [x["outcome"] for x in _log(rl)[before:] if x["stage"] == "precreate"] == ["ok"]


@pytest.fixture
def cdi_spec(rl):
    os.makedirs("/etc/cdi", exist_ok=True)
    path = f"/etc/cdi/nvbind-rootless-{uuid.uuid4().hex[:8]}.json"
    r = subprocess.run([rl.exe, "--root", rl.root, "--log", "off", "cdi", "generate", "--output", path],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    with open(path) as f:
        spec = json.load(f)
    # as tests/e2e/test_cdi_podman.py: this machine sees the simulated host at `root`; the
    # nodes are at /dev inside the overlay, so deviceNodes keep their /dev host paths
    for ed in [spec["containerEdits"]] + [d["containerEdits"] for d in spec["devices"]]:
        for m in ed.get("mounts", []):
            m["hostPath"] = rl.root + m["hostPath"]
    with open(path, "w") as f:
        json.dump(spec, f)
    yield path
    os.unlink(path)


def test_cdi_gives_gpu1(rl, cdi_spec):
    r, _ = _run(rl, args=CHECK, extra=["--device", "nvidia.com/gpu=1"])     # no hooks dir
    assert r.returncode == 0, r.stdout + r.stderr
    assert "open /dev/nvidia1: ENXIO" in r.stdout and "open /dev/nvidia0: ENOENT" in r.stdout
    assert "dlopen libcuda.so.1: OK" in r.stdout


def test_exclusive_leases_in_the_user_runtime_dir(rl):
    excl = ["--annotation", "nvbind.io/isolation=exclusive"]
    gpu1 = {"NVIDIA_VISIBLE_DEVICES": "1"}
    r, holder = _run(rl, args=["sleep", "60"], env=gpu1, hooks_dir=rl.hooks_precreate,
                     extra=excl, detach=True)
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        leases = f"{rl.cache}/leases"
        held = [n for n in os.listdir(leases) if n.endswith(".lease")]
        assert len(held) == 1, os.listdir(leases)
        with open(f"{leases}/{held[0]}") as f:
            lease = json.load(f)
        assert lease["id"].startswith(rl.pm.podman(["inspect", "-f", "{{.Id}}", holder]).stdout.strip()[:12])
        assert os.stat(f"{leases}/{held[0]}").st_uid == rl.user.uid
        # GPU 1 is held: a second exclusive container is refused, with nvbind's own line
        r2, _ = _run(rl, args=CHECK, env=gpu1, hooks_dir=rl.hooks_precreate, extra=excl)
        assert r2.returncode != 0
        assert "nvbind: error: GPU" in r2.stderr and "held exclusively" in r2.stderr, r2.stderr
        assert "Traceback" not in r2.stderr
    finally:
        rl.pm.podman(["rm", "-f", "-t", "0", holder], rl.hooks_precreate)
    # poststop released it: GPU 1 can be had exclusively again
    assert not [n for n in os.listdir(f"{rl.cache}/leases") if n.endswith(".lease")]
    r3, _ = _run(rl, args=CHECK, env=gpu1, hooks_dir=rl.hooks_precreate, extra=excl)
    assert r3.returncode == 0 and "open /dev/nvidia1: ENXIO" in r3.stdout, r3.stdout + r3.stderr


def test_exclusive_refused_without_a_user_runtime_dir(rl):
    """nvbind as an ordinary user with no runtime directory of its own: the lease step (the
    createRuntime entry precreate adds) refuses with one line naming the settings."""
    import pathlib
    top = pathlib.Path(rl.state) / "nobody"         # pytest's tmp dirs are private to root
    bundle = top / "bundle"
    bundle.mkdir(parents=True)
    state = json.dumps({"ociVersion": "1.0.2", "id": "c1", "status": "creating", "pid": 1,
                        "bundle": str(bundle)})
    (bundle / "config.json").write_text(json.dumps({"ociVersion": "1.0.2", "root": {"path": "rootfs"},
                                                    "process": {"args": ["true"], "cwd": "/"}}))
    os.makedirs(bundle / "rootfs")
    nobody = 65534
    assert not os.path.exists(f"/run/user/{nobody}")
    own = top / "xdg"
    own.mkdir(mode=0o700)
    os.chown(own, nobody, nobody)
    cases = [({}, False), ({"XDG_RUNTIME_DIR": "/tmp"}, False),        # not the user's own
             ({"XDG_RUNTIME_DIR": str(own)}, True)]
    for env, ok in cases:
        r = subprocess.run(["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups",
                            "env", "-i", "PATH=/usr/bin:/bin", "NVBIND_LOG=off",
                            *[f"{k}={v}" for k, v in env.items()],
                            rl.exe, "hook", "createRuntime", "--lease", "GPU-x"],
                           input=state, capture_output=True, text=True, timeout=60)
        if ok:
            assert r.returncode == 0, r.stderr
            assert os.path.exists(own / "nvbind" / "leases" / "GPU-x.lease")
        else:
            assert r.returncode == 1, (env, r.stderr)
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("nvbind: error: exclusive GPU access "
                                                           "needs a lease directory"), r.stderr
            assert "XDG_RUNTIME_DIR" in lines[0] and "lease_dir" in lines[0]


def test_live_hook_refuses_cleanly(rl):
    before = len(_log(rl))
    r, _ = _run(rl, args=CHECK, env={"NVIDIA_VISIBLE_DEVICES": "1"}, hooks_dir=rl.hooks_live)
    assert r.returncode != 0, r.stdout
    assert "nvbind: error: container " in r.stderr and "without host root" in r.stderr, r.stderr
    assert "use the precreate hook or CDI" in r.stderr and "Traceback" not in r.stderr
    new = [x for x in _log(rl)[before:] if x["stage"] == "createRuntime"]
    assert new and new[-1]["outcome"] == "error", new
    # a container that asks for nothing is not harmed by the same hook
    r, _ = _run(rl, args=["sh", "-c", "echo ran; ls /dev"], hooks_dir=rl.hooks_live)
    assert r.returncode == 0, r.stderr
    assert "ran" in r.stdout and "nvidia" not in r.stdout
