"""Exclusive leases through the real engines (issue 13, 2): podman (precreate hook from
hooks.d; the lease is taken by the createRuntime entry precreate adds) from one working
directory and from several, 24 containers at once, `podman rm -f`, SIGKILL of the holder;
and the runtime shim driven as containerd drives a runtime, runc underneath. Exactly one
holder, released on every way out, nothing locked for good."""
import json
import os
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

EXCL = {"NVIDIA_VISIBLE_DEVICES": "1"}
ANN = ["--annotation", "nvbind.io/isolation=exclusive"]


@pytest.fixture(scope="module")
def world(podman_env, tmp_path_factory):
    """podman_env's image and host, with hooks.d pointing nvbind at a config of our own
    (its own lease directory), and one working directory per caller."""
    import engines
    root, base = podman_env
    d = tmp_path_factory.mktemp("leases")
    cfg = d / "config.toml"
    cfg.write_text(f'lease_dir = "{d}/leases"\ncache_dir = "{d}/cache"\n')
    os.makedirs(d / "hooks.d")
    hook = engines.nvbind_hook("precreate", root, str(d / "nvbind.log"))
    hook["args"][1:1] = ["--config", str(cfg)]
    (d / "hooks.d" / "50-nvbind.json").write_text(json.dumps(
        {"version": "1.0.0", "hook": hook, "when": {"always": True}, "stages": ["precreate"]}))
    pm = engines.Podman(base.state, str(d / "hooks.d"))
    pm.log = str(d / "nvbind.log")
    for i in range(3):
        os.makedirs(d / f"cwd{i}")
    return pm, d


def podman(pm, args, cwd=None, timeout=120):
    return subprocess.run(pm.base() + args, capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


def start(pm, name, env, cwd, extra=ANN, cmd=("sleep", "300")):
    args = ["run", "-d", "--name", name, "--network", "none", "--ulimit", "nofile=20000:20000",
            "--ulimit", "nproc=32768:32768"]
    for k, v in env.items():
        args += ["--env", f"{k}={v}"]
    import engines
    return podman(pm, args + list(extra) + [engines.IMAGE, *cmd], cwd=cwd)


def leases_in(d):
    try:
        return sorted(n for n in os.listdir(d / "leases") if n.endswith(".lease"))
    except FileNotFoundError:
        return []


def live_leases(d):
    """Leases whose holder still runs. podman does not always run the poststop entry the
    spec carries (`podman rm -f -t 0` removes the container without `runc delete` running
    it, seen with podman 4.3 here): such a lease stays on disk, stale, and is reclaimed by
    the next taker; none may stay live."""
    from nvbind.apply import leases
    return [n for n in leases_in(d) if leases.live(json.loads((d / "leases" / n).read_text()))]


def rm(pm, *names):
    r = podman(pm, ["rm", "-f", "-t", "0", "--ignore", *names])
    assert r.returncode == 0, r.stderr


def test_one_holder_whatever_the_working_directory(world):
    pm, d = world
    tag = uuid.uuid4().hex[:6]
    a, b, c, s, m, o = (f"{x}-{tag}" for x in "abcsmo")
    try:
        r = start(pm, a, EXCL, d / "cwd0")
        assert r.returncode == 0, r.stderr
        assert len(live_leases(d)) == 1
        held = json.loads((d / "leases" / live_leases(d)[0]).read_text())
        cid = podman(pm, ["inspect", "--format", "{{.Id}}", a]).stdout.strip()
        assert held["id"] == cid and held["pid"] > 0 and os.path.isdir(held["bundle"])
        # the same working directory (the old bug: every caller from it was "the holder")
        r = start(pm, b, EXCL, d / "cwd0")
        assert r.returncode != 0 and "hook" in r.stderr, r.stderr
        r = start(pm, c, EXCL, d / "cwd1")
        assert r.returncode != 0
        # a shared container and a MIG-less other GPU: shared on GPU 1 is refused, GPU 0 fine
        r = start(pm, s, {"NVIDIA_VISIBLE_DEVICES": "1"}, d / "cwd2", extra=[])
        # refused by its createContainer entry, with nvbind's own line (runc passes it on)
        assert r.returncode != 0 and "nvbind: error: GPU" in r.stderr \
            and "held exclusively by container " + cid in r.stderr, r.stderr
        r = start(pm, o, {"NVIDIA_VISIBLE_DEVICES": "0"}, d / "cwd2", extra=[])
        assert r.returncode == 0, r.stderr
        log = [json.loads(x) for x in open(pm.log)]
        assert any("held exclusively by container " + cid in (e.get("error") or "") for e in log)
        # podman rm -f: released, and the next one gets it
        rm(pm, a)
        assert live_leases(d) == []
        rm(pm, b, c, s)
        r = start(pm, b, EXCL, d / "cwd1")
        assert r.returncode == 0, r.stderr
    finally:
        rm(pm, a, b, c, s, m, o)
    assert live_leases(d) == []


def test_sigkill_of_the_holder(world):
    """The container's init gets SIGKILL: whatever podman's cleanup does, the lease is not
    held by a dead process."""
    pm, d = world
    tag = uuid.uuid4().hex[:6]
    a, b = f"k1-{tag}", f"k2-{tag}"
    try:
        assert start(pm, a, EXCL, d / "cwd0").returncode == 0
        assert len(live_leases(d)) == 1
        pid = int(podman(pm, ["inspect", "--format", "{{.State.Pid}}", a]).stdout)
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            st = podman(pm, ["inspect", "--format", "{{.State.Status}}", a]).stdout.strip()
            if st != "running":
                break
            time.sleep(0.1)
        r = start(pm, b, EXCL, d / "cwd1")
        assert r.returncode == 0, r.stderr
        held = json.loads((d / "leases" / live_leases(d)[0]).read_text())
        assert held["id"] == podman(pm, ["inspect", "--format", "{{.Id}}", b]).stdout.strip()
    finally:
        rm(pm, a, b)
    assert live_leases(d) == []


def test_24_concurrent_from_several_directories(world):
    pm, d = world
    tag = uuid.uuid4().hex[:6]
    names = [f"c{i}-{tag}" for i in range(24)]
    try:
        with ThreadPoolExecutor(8) as ex:
            results = list(ex.map(lambda i: start(pm, names[i], EXCL, d / f"cwd{i % 3}"),
                                  range(24)))
        ok = [n for n, r in zip(names, results) if r.returncode == 0]
        running = podman(pm, ["ps", "--filter", f"name={tag}", "--format", "{{.Names}}"]).stdout.split()
        assert len(ok) == 1 and running == ok, (ok, running, [r.stderr for r in results][:2])
        assert len(live_leases(d)) == 1
    finally:
        rm(pm, *names)
    assert live_leases(d) == []


def test_runtime_shim_as_containerd_drives_it(live_env, tmp_path):
    """containerd's runc shim: `RUNTIME --root R --log L --log-format json create --bundle B
    --pid-file P ID`, then `start ID`, `delete ID` (runc's poststop hooks run at delete).
    Exactly one of two exclusive bundles is created; after the holder's delete the other is."""
    import engines
    root, image = live_env
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'lease_dir = "{tmp_path}/leases"\n')
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "NVBIND_ROOT": root, "NVBIND_LOG":
           str(tmp_path / "log"), "NVBIND_CONFIG": str(cfg), "NVBIND_CACHE_DIR": "off"}
    from conftest import nvbind_cmd
    state = str(tmp_path / "state")

    def shim(*args, **kw):
        return subprocess.run(nvbind_cmd() + ["runtime", "--root", state, "--log",
                                              str(tmp_path / "runc.log"), "--log-format", "json",
                                              *args], env=env, stdin=subprocess.DEVNULL,
                              stdout=kw.pop("out", subprocess.DEVNULL),
                              stderr=kw.pop("err", subprocess.DEVNULL), timeout=120)

    bundles = [engines.make_bundle(str(tmp_path / f"b{i}"), image, ["sleep", "300"],
                                   ["NVIDIA_VISIBLE_DEVICES=1"]) for i in range(2)]
    for b in bundles:
        c = json.load(open(f"{b}/config.json"))
        c["annotations"] = {"nvbind.io/isolation": "exclusive"}
        json.dump(c, open(f"{b}/config.json", "w"))
    ids = [f"shim-{uuid.uuid4().hex[:6]}-{i}" for i in range(2)]
    try:
        assert shim("create", "--bundle", bundles[0], "--pid-file", str(tmp_path / "p0"),
                    ids[0]).returncode == 0
        assert leases_in(tmp_path) != []
        assert shim("start", ids[0]).returncode == 0
        assert shim("create", "--bundle", bundles[1], "--pid-file", str(tmp_path / "p1"),
                    ids[1]).returncode != 0
        # refused by the shim's own check (the decision), before runc ever ran
        assert "held exclusively by container " + ids[0] in open(tmp_path / "log").read()
        assert shim("delete", "--force", ids[0]).returncode == 0
        assert leases_in(tmp_path) == []
        shim("delete", "--force", ids[1])
        assert shim("create", "--bundle", bundles[1], "--pid-file", str(tmp_path / "p1"),
                    ids[1]).returncode == 0
        held = json.loads((tmp_path / "leases" / leases_in(tmp_path)[0]).read_text())
        assert held["id"] == ids[1] and held["pid"] == int(open(tmp_path / "p1").read())
    finally:
        for i in ids:
            shim("delete", "--force", i)
    assert leases_in(tmp_path) == []


def test_running_shared_container_blocks_a_later_exclusive(world):
    """A default (shared) container registers itself from its createContainer entry; an
    exclusive one on its GPU is refused while it runs (from any directory), and runs once
    the shared one is removed."""
    pm, d = world
    tag = uuid.uuid4().hex[:6]
    s, e, m = f"sh-{tag}", f"ex-{tag}", f"mig-{tag}"
    try:
        r = start(pm, s, {"NVIDIA_VISIBLE_DEVICES": "0:0"}, d / "cwd0", extra=[])
        assert r.returncode == 0, r.stderr
        r = start(pm, e, {"NVIDIA_VISIBLE_DEVICES": "0"}, d / "cwd1")
        cid = podman(pm, ["inspect", "--format", "{{.Id}}", s]).stdout.strip()
        assert r.returncode != 0 and f"is in use by container {cid}" in r.stderr, r.stderr
        log = [json.loads(x) for x in open(pm.log)]
        assert any(f"is in use by container {cid}" in (x.get("error") or "") for x in log)
        r = start(pm, m, {"NVIDIA_VISIBLE_DEVICES": "0:1"}, d / "cwd1")    # another slice
        assert r.returncode == 0, r.stderr
        rm(pm, s, e, m)
        r = start(pm, e, {"NVIDIA_VISIBLE_DEVICES": "0"}, d / "cwd1")
        assert r.returncode == 0, r.stderr
    finally:
        rm(pm, s, e, m)
    assert live_leases(d) == []
