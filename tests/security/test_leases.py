"""Exclusive leases (issue 13, 1): one key space for a GPU and its MIG slices, holders
identified by the OCI state (id, bundle, init pid + start time), every GPU user checks,
sandbox containers get nothing, and an untrusted lease directory is refused."""
import json
import os
import signal
import subprocess

import pytest

from conftest import base_config, run_nvbind
from nvbind.apply import leases
from nvbind.errors import InputError, NvbindError


def test_key_space_gpu_and_slices():
    g, h = "GPU-aaaa", "GPU-bbbb"
    assert leases.conflicts(g, g)
    assert leases.conflicts(g, f"{g}:1.0") and leases.conflicts(f"{g}:1.0", g)
    assert leases.conflicts(f"{g}:1.0", f"{g}:1.0")
    assert not leases.conflicts(f"{g}:1.0", f"{g}:2.0")
    assert not leases.conflicts(g, h) and not leases.conflicts(f"{g}:1.0", f"{h}:1.0")
    for bad in ("", "GPU-x:1", "GPU-x:a.b", "../etc", "GPU x", "GPU-x:1.0:2.0", "GPU-\u0661"):
        with pytest.raises(InputError):
            leases.parse_key(bad)


@pytest.fixture
def sleeper():
    p = subprocess.Popen(["sleep", "60"])
    yield p
    p.kill()
    p.wait()


def test_whole_gpu_blocks_its_slices_and_back(tmp_path, sleeper):
    d = str(tmp_path / "l")
    a = leases.holder("a", str(tmp_path), sleeper.pid)
    b = leases.holder("b", str(tmp_path), os.getpid())
    leases.acquire(d, ["GPU-1"], a)
    with pytest.raises(NvbindError, match="GPU GPU-1:1.0 is held exclusively by container a"):
        leases.acquire(d, ["GPU-1:1.0"], b)
    with pytest.raises(NvbindError, match="held exclusively"):
        leases.check(d, ["GPU-1:2.0"])
    leases.check(d, ["GPU-2"])                          # another GPU: fine
    assert leases.release(d, "a", str(tmp_path)) == ["released GPU-1"]
    leases.acquire(d, ["GPU-1:1.0"], b)
    leases.acquire(d, ["GPU-1:2.0"], a)                 # another slice: fine
    with pytest.raises(NvbindError, match="GPU GPU-1 is held exclusively by container"):
        leases.acquire(d, ["GPU-1"], leases.holder("c", str(tmp_path), os.getpid()))
    assert leases.acquire(d, ["GPU-1:1.0"], b) == []    # the holder again: idempotent
    leases.check(d, ["GPU-1:1.0"], b)


def test_liveness_follows_the_init_process(tmp_path):
    d = str(tmp_path / "l")
    p = subprocess.Popen(["sleep", "60"])
    leases.acquire(d, ["GPU-1"], leases.holder("a", str(tmp_path), p.pid))
    with pytest.raises(NvbindError):
        leases.check(d, ["GPU-1"])
    p.send_signal(signal.SIGKILL)                       # the holder dies, no poststop
    p.wait()
    leases.check(d, ["GPU-1"])                          # no longer held
    notes = leases.acquire(d, ["GPU-1"], leases.holder("b", str(tmp_path), os.getpid()))
    assert "reclaimed stale lease on GPU-1 from container a" in notes[0]


def test_reused_pid_is_not_the_holder(tmp_path):
    d = str(tmp_path / "l")
    h = leases.holder("a", str(tmp_path), os.getpid())
    assert h["start"] == leases.start_time(os.getpid()) and h["start"] > 0
    leases.acquire(d, ["GPU-1"], dict(h, start=h["start"] - 1))     # same pid, other process
    leases.check(d, ["GPU-1"])
    assert leases.live(h) and not leases.live(dict(h, start=h["start"] - 1))
    assert not leases.live(dict(h, bundle=str(tmp_path / "gone")))
    assert not leases.live(dict(h, boot="another-boot"))


def test_start_time_with_a_hostile_comm(tmp_path):
    """comm may hold ') (' and spaces: the start time is read after the last ')'."""
    exe = tmp_path / "a) (b c"
    os.symlink("/bin/sleep", exe)
    p = subprocess.Popen([str(exe), "60"])
    try:
        with open(f"/proc/{p.pid}/stat") as f:
            assert ") (b c)" in f.read()
        st = leases.start_time(p.pid)
        assert st and st >= leases.start_time(os.getpid())
    finally:
        p.kill()
        p.wait()


def test_untrusted_lease_dir_is_refused(tmp_path):
    d = tmp_path / "l"
    d.mkdir()
    os.chown(d, 65534, 65534)
    with pytest.raises(NvbindError, match="owned by uid 65534"):
        leases.acquire(str(d), ["GPU-1"], leases.holder("a", str(tmp_path), os.getpid()))
    os.chown(d, 0, 0)
    d.chmod(0o777)
    with pytest.raises(NvbindError, match="writable by group or others"):
        leases.acquire(str(d), ["GPU-1"], leases.holder("a", str(tmp_path), os.getpid()))


def test_planted_link_is_not_followed(tmp_path):
    """A symlink planted where the lease (or its temp file) goes is replaced or removed,
    never written through; a temp file left by a writer killed mid-write does not block a
    later taker that happens to get the same pid."""
    d = tmp_path / "l"
    d.mkdir(mode=0o755)
    victim = tmp_path / "victim"
    victim.write_text("keep")
    os.symlink(victim, d / "GPU-1.lease")
    os.symlink(victim, d / f".GPU-1.lease.nvbind-{os.getpid()}")
    (d / ".GPU-2.lease.nvbind-1").write_text("half")
    leases.acquire(str(d), ["GPU-1"], leases.holder("a", str(tmp_path), os.getpid()))
    assert victim.read_text() == "keep" and not os.path.islink(d / "GPU-1.lease")
    assert sorted(os.listdir(d)) == [".lock", "GPU-1.lease"]


def test_bad_hostname_leaves_nothing_behind(tmp_path):
    d = tmp_path / "l"
    h = leases.holder("a", str(tmp_path), os.getpid(), "x" * 130_000)
    leases.acquire(str(d), ["GPU-1"], h)
    assert sorted(os.listdir(d)) == [".lock", "GPU-1.lease"]
    assert len((d / "GPU-1.lease").read_text()) < 1000


# ---- through the hook entry points --------------------------------------------------------
def _cfgfile(tmp_path):
    p = tmp_path / "config.toml"
    p.write_text(f'lease_dir = "{tmp_path}/leases"\n')
    return str(p)


ENV = {"PATH": "/usr/bin:/bin", "NVBIND_LOG": "off"}


def _precreate(sim_root, cfgfile, env, ann=None, extra_cache=None):
    return run_nvbind(["--root", sim_root, "--config", cfgfile, "hook", "precreate"],
                      json.dumps(base_config(env=env, annotations=ann or {})),
                      env=dict(ENV, NVBIND_CACHE_DIR=extra_cache or "off"))


def _as_user(sim_root, cfgfile, tmp_path, env, pid, cid, ann=None):
    """A GPU container through precreate, then the createContainer entry precreate added
    (its --use part: the ld cache part needs a real rootfs), as the runtime runs it.
    Returns the createContainer run (or the failed precreate)."""
    r = _precreate(sim_root, cfgfile, env, ann)
    if r.returncode != 0:
        return r
    out = json.loads(r.stdout)
    entry = out["hooks"]["createContainer"][0]
    args = entry["args"][1:]
    uses = [x for i, a in enumerate(args) if a == "--use" for x in ("--use", args[i + 1])]
    bundle = tmp_path / f"b-{cid}"
    bundle.mkdir()
    (bundle / "rootfs").mkdir()
    out["root"]["path"] = str(bundle / "rootfs")
    (bundle / "config.json").write_text(json.dumps(out))
    state = json.dumps({"ociVersion": "1.0.2", "id": cid, "pid": pid, "bundle": str(bundle)})
    return run_nvbind(["--config", cfgfile, "hook", "createContainer", *uses], state, env=ENV)


def test_shared_and_virtual_users_check_the_leases(sim_root, tmp_path, sleeper):
    cfgfile = _cfgfile(tmp_path)
    r = _precreate(sim_root, cfgfile, ["NVIDIA_VISIBLE_DEVICES=0"], {"nvbind.io/isolation": "exclusive"})
    assert r.returncode == 0, r.stderr
    entry = json.loads(r.stdout)["hooks"]["createRuntime"][0]
    key = entry["args"][entry["args"].index("--lease") + 1]
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "config.json").write_text(r.stdout.decode())
    state = json.dumps({"ociVersion": "1.0.2", "id": "holder", "pid": sleeper.pid,
                        "bundle": str(bundle)})
    r = run_nvbind(["--config", cfgfile, "hook", "createRuntime", "--lease", key], state, env=ENV)
    assert r.returncode == 0, r.stderr
    # a default (shared) container on that GPU: refused, naming the holder
    r = _as_user(sim_root, cfgfile, tmp_path, ["NVIDIA_VISIBLE_DEVICES=0"], os.getpid(), "s1")
    assert r.returncode == 1 and b"held exclusively by container holder" in r.stderr, r.stderr
    r = _as_user(sim_root, cfgfile, tmp_path, ["NVIDIA_VISIBLE_DEVICES=all"], os.getpid(), "s2")
    assert r.returncode == 1 and b"held exclusively" in r.stderr
    # a MIG slice of that GPU: refused too (one key space); the other GPU: fine
    r = _as_user(sim_root, cfgfile, tmp_path, ["NVIDIA_VISIBLE_DEVICES=0:0"], os.getpid(), "s3")
    assert r.returncode == 1 and b"held exclusively" in r.stderr, r.stderr
    r = _as_user(sim_root, cfgfile, tmp_path, ["NVIDIA_VISIBLE_DEVICES=1"], os.getpid(), "s4")
    assert r.returncode == 0, r.stderr
    # the holder's bad lease key: exit 2, nothing written
    r = run_nvbind(["--config", cfgfile, "hook", "createRuntime", "--lease", "../../x"], state, env=ENV)
    assert r.returncode == 2 and b"is not a lease key" in r.stderr
    # poststop releases; the shared container then gets the GPU
    r = run_nvbind(["--config", cfgfile, "hook", "poststop"], state, env=ENV)
    assert r.returncode == 0 and not [n for n in os.listdir(tmp_path / "leases") if n.endswith(".lease")]
    r = _as_user(sim_root, cfgfile, tmp_path, ["NVIDIA_VISIBLE_DEVICES=0"], os.getpid(), "s5")
    assert r.returncode == 0, r.stderr


def test_mig_exclusive_blocks_the_whole_gpu(sim_root, tmp_path, sleeper):
    cfgfile = _cfgfile(tmp_path)
    r = _precreate(sim_root, cfgfile, ["NVIDIA_VISIBLE_DEVICES=0:0"], {"nvbind.io/isolation": "exclusive"})
    assert r.returncode == 0, r.stderr
    entry = json.loads(r.stdout)["hooks"]["createRuntime"][0]
    key = entry["args"][entry["args"].index("--lease") + 1]
    assert key.startswith("GPU-") and ":" in key
    (tmp_path / "config.json").write_text(r.stdout.decode())
    state = json.dumps({"ociVersion": "1.0.2", "id": "m", "pid": sleeper.pid, "bundle": str(tmp_path)})
    assert run_nvbind(["--config", cfgfile, "hook", "createRuntime", "--lease", key], state,
                      env=ENV).returncode == 0
    r = _precreate(sim_root, cfgfile, ["NVIDIA_VISIBLE_DEVICES=0"], {"nvbind.io/isolation": "exclusive"})
    assert r.returncode == 0, r.stderr      # decided; the lease is taken at createRuntime
    entry = json.loads(r.stdout)["hooks"]["createRuntime"][0]
    key2 = entry["args"][entry["args"].index("--lease") + 1]
    state2 = json.dumps({"ociVersion": "1.0.2", "id": "w", "pid": os.getpid(), "bundle": str(tmp_path)})
    r = run_nvbind(["--config", cfgfile, "hook", "createRuntime", "--lease", key2], state2, env=ENV)
    assert r.returncode == 1 and b"held exclusively by container m" in r.stderr, r.stderr


@pytest.mark.parametrize("ann", [{"io.kubernetes.cri.container-type": "sandbox"},
                                 {"io.kubernetes.cri-o.ContainerType": "sandbox"}])
def test_sandbox_containers_never_get_gpus(sim_root, tmp_path, ann):
    cfgfile = _cfgfile(tmp_path)
    text = json.dumps(base_config(env=["NVIDIA_VISIBLE_DEVICES=all"],
                                  annotations={**ann, "nvbind.io/isolation": "exclusive",
                                               "nvbind.io/gpus": "all"}))
    r = run_nvbind(["--root", sim_root, "--config", cfgfile, "hook", "precreate"], text,
                   env=dict(ENV, NVBIND_CACHE_DIR="off"))
    assert r.returncode == 0 and r.stdout == text.encode(), r.stderr
    assert not os.path.exists(tmp_path / "leases")
    # and the pod's own container (same annotations minus the sandbox one) gets its GPU
    r = _precreate(sim_root, cfgfile, ["NVIDIA_VISIBLE_DEVICES=all"], {"nvbind.io/isolation": "exclusive"})
    assert r.returncode == 0 and "createRuntime" in json.loads(r.stdout)["hooks"]


def test_a_running_shared_user_blocks_a_later_exclusive(tmp_path):
    """Shared/virtual users register from createContainer; an exclusive container that
    comes later is refused while one runs, and gets the GPU once it is gone."""
    d = str(tmp_path / "l")
    p = subprocess.Popen(["sleep", "60"])
    try:
        leases.register(d, ["GPU-1:1.0"], leases.holder("shared", str(tmp_path), p.pid))
        with pytest.raises(NvbindError, match="GPU GPU-1 is in use by container shared"):
            leases.acquire(d, ["GPU-1"], leases.holder("x", str(tmp_path), os.getpid()))
        with pytest.raises(NvbindError, match="in use by container shared"):
            leases.check(d, ["GPU-1"], exclusive=True)
        leases.check(d, ["GPU-1"])                      # another shared user: fine
        leases.acquire(d, ["GPU-1:2.0"], leases.holder("y", str(tmp_path), os.getpid()))
        # and the other way round: a registration while a conflicting lease is live
        with pytest.raises(NvbindError, match="held exclusively by container y"):
            leases.register(d, ["GPU-1"], leases.holder("z", str(tmp_path), p.pid))
    finally:
        p.kill()
        p.wait()
    leases.release(d, "y", str(tmp_path))
    leases.acquire(d, ["GPU-1"], leases.holder("x", str(tmp_path), os.getpid()))
    assert [n for n in os.listdir(d) if n.endswith(".use")] == []       # swept


def test_register_through_the_create_container_entry(sim_root, tmp_path, sleeper):
    cfgfile = _cfgfile(tmp_path)
    r = _precreate(sim_root, cfgfile, ["NVIDIA_VISIBLE_DEVICES=1"])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    entry = out["hooks"]["createContainer"][0]
    assert "--use" in entry["args"] and "createRuntime" not in out["hooks"]
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "rootfs").mkdir()
    out["root"]["path"] = str(bundle / "rootfs")
    (bundle / "config.json").write_text(json.dumps(out))
    state = json.dumps({"ociVersion": "1.0.2", "id": "sh", "pid": sleeper.pid, "bundle": str(bundle)})
    args = entry["args"][1:]
    use = args.index("--use")
    r = run_nvbind(["--config", cfgfile, *args[args.index("hook"):use + 2]], state, env=ENV)
    assert r.returncode == 0, r.stderr
    r = _precreate(sim_root, cfgfile, ["NVIDIA_VISIBLE_DEVICES=1"], {"nvbind.io/isolation": "exclusive"})
    entry = json.loads(r.stdout)["hooks"]["createRuntime"][0]
    state2 = json.dumps({"ociVersion": "1.0.2", "id": "x", "pid": os.getpid(), "bundle": str(bundle)})
    r = run_nvbind(["--config", cfgfile, "hook", *entry["args"][entry["args"].index("createRuntime"):]],
                   state2, env=ENV)
    assert r.returncode == 1 and b"is in use by container sh" in r.stderr, r.stderr


def test_registration_that_cannot_be_written_warns(tmp_path, sleeper):
    """A full or read-only lease directory does not stop a shared container (it would stop
    every GPU container); the warning says what is lost. A live exclusive lease still
    refuses it."""
    d = tmp_path / "l"
    leases.acquire(str(d), ["GPU-2"], leases.holder("x", str(tmp_path), sleeper.pid))
    os.mkdir(d / f"{leases._user_name({'id': 's', 'bundle': str(tmp_path)})}")   # in the way
    note = leases.register(str(d), ["GPU-1"], leases.holder("s", str(tmp_path), os.getpid()))
    assert note and "an exclusive container could be given this GPU" in note
    with pytest.raises(NvbindError, match="held exclusively by container x"):
        leases.register(str(d), ["GPU-2"], leases.holder("s", str(tmp_path), os.getpid()))


def test_register_reads_exclusive_leases_only_until_user_records_gather(tmp_path):
    """A GPU container's createContainer registers without reading every other user's
    record (its cost must not grow with the containers already running): a stale record
    stays until an exclusive taker comes, or until more than SWEEP_USERS_AT gather."""
    d = str(tmp_path / "l")
    dead = subprocess.Popen(["true"])
    dead.wait()
    leases.register(d, ["GPU-1"], leases.holder("gone", str(tmp_path), dead.pid))
    leases.register(d, ["GPU-2"], leases.holder("me", str(tmp_path), os.getpid()))
    users = lambda: sorted(n.split("-")[0] for n in os.listdir(d) if n.endswith(".use"))  # noqa: E731
    assert users() == ["gone", "me"]
    for i in range(leases.SWEEP_USERS_AT):
        leases.register(d, ["GPU-3"], leases.holder(f"old{i}", str(tmp_path), dead.pid))
    # the last of those found SWEEP_USERS_AT + 1 records: swept the stale ones, then wrote its own
    assert users() == ["me", f"old{leases.SWEEP_USERS_AT - 1}"]
    leases.register(d, ["GPU-1"], leases.holder("gone", str(tmp_path), dead.pid))
    leases.acquire(d, ["GPU-7"], leases.holder("x", str(tmp_path), os.getpid()))
    assert users() == ["me"]


def test_shared_users_check_without_the_lease_module_sees_every_lease(tmp_path, sleeper):
    """doors.check_leases for a shared user (no lock, no fcntl: one listing): a live lease
    still refuses it, whatever other users' records are there."""
    from types import SimpleNamespace
    from nvbind.doors import check_leases
    d = str(tmp_path / "l")
    settings = SimpleNamespace(config={"lease_dir": d})
    ed = SimpleNamespace(keys=["GPU-1"], isolation="shared")
    check_leases(settings, ed)                                       # no directory: fine
    leases.register(d, ["GPU-2"], leases.holder("u", str(tmp_path), sleeper.pid))
    check_leases(settings, ed)                                       # users only: fine
    leases.acquire(d, ["GPU-1:1.0"], leases.holder("x", str(tmp_path), sleeper.pid))
    assert any(n.endswith(leases.SUFFIX) for n in os.listdir(d)) and leases.SUFFIX == ".lease"
    with pytest.raises(NvbindError, match=r"held exclusively by container x .* through GPU-1:1.0"):
        check_leases(settings, ed)
