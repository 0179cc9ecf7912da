"""The admin's configuration is a ceiling a container can only tighten (issue 11), through
real engines: podman running nvbind as its precreate hook, and runc running it as the
createRuntime hook. Each case was a bypass on the old code, where the question "what may
this container get?" was answered in four places."""
import json
import os
import socket
import subprocess
import uuid

import pytest

from conftest import base_config, run_nvbind

HOOK_PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"

VIRTUAL = '''default_profile = "vp"
[profiles.vp]
isolation = "virtual"
memory_limit = "4G"
mps_thread_percentage = 25
'''
LAB = '''[profiles.lab]
mounts = [{host_path = "/etc", container_path = "/hostetc", read_only = false}]
'''

# (id, configuration, env, annotations, refusal words or None)
REFUSED = [
    ("caps-ceiling-env-profile", 'capabilities = ["compute", "utility"]\n',
     {"NVIDIA_VISIBLE_DEVICES": "1", "NVBIND_PROFILE": "gaming"}, {},
     "capability display, graphics, ngx, video (from profile 'gaming') is not offered: "
     "capabilities = [compute, utility]"),
    ("caps-ceiling-annotation-profile", 'capabilities = ["compute", "utility"]\n',
     {"NVIDIA_VISIBLE_DEVICES": "1"}, {"nvbind.io/profile": "gaming"},
     "(from profile 'gaming') is not offered"),
    ("admin-profile-not-allowed", LAB, {"NVIDIA_VISIBLE_DEVICES": "1"},
     {"nvbind.io/profile": "lab"},
     "profile 'lab' (annotation nvbind.io/profile) may not be selected by a container: "
     "allowed_profiles = [default, ai-ml, gaming]"),
    ("memory-limit-raised", VIRTUAL, {"NVIDIA_VISIBLE_DEVICES": "1"},
     {"nvbind.io/memory-limit": "1T"},
     "annotation nvbind.io/memory-limit (1048576 MiB) is above the limit of profile 'vp' (4096 MiB)"),
    ("isolation-loosened", VIRTUAL, {"NVIDIA_VISIBLE_DEVICES": "1"},
     {"nvbind.io/isolation": "shared"},
     "isolation 'shared' (annotation nvbind.io/isolation) would loosen isolation 'virtual' of "
     "default_profile 'vp'"),
    ("virtual-to-exclusive", VIRTUAL, {"NVIDIA_VISIBLE_DEVICES": "1"},
     {"nvbind.io/isolation": "exclusive"}, "would loosen isolation 'virtual'"),
]


@pytest.fixture(scope="module")
def mps_root(live_env, tmp_path_factory):
    """The simulated host with a CUDA MPS control daemon's socket (isolation = virtual)."""
    root, _image = live_env
    copy = str(tmp_path_factory.mktemp("mps") / "host")
    subprocess.run(["cp", "-a", root, copy], check=True)
    os.makedirs(f"{copy}/tmp/nvidia-mps")
    s = socket.socket(socket.AF_UNIX)
    s.bind(f"{copy}/tmp/nvidia-mps/control")
    s.close()
    return copy


def _config(tmp_path, text: str) -> str:
    path = tmp_path / f"config-{uuid.uuid4().hex[:6]}.toml"
    # top-level keys first: after a [table] they would belong to it
    path.write_text(f'cache_dir = "{tmp_path}/cache"\nlease_dir = "{tmp_path}/leases"\n' + text)
    return str(path)


def _podman(podman_env, tmp_path, config: str, root: str | None = None):
    """podman with nvbind as its precreate hook, under `config`."""
    import engines
    sim_root, pm = podman_env
    hooks = tmp_path / f"hooks-{uuid.uuid4().hex[:6]}"
    hooks.mkdir()
    log = str(tmp_path / "nvbind.log")
    (hooks / "50-nvbind.json").write_text(json.dumps({
        "version": "1.0.0", "when": {"always": True}, "stages": ["precreate"],
        "hook": {"path": engines.nvbind_exe(),
                 "args": ["nvbind", "--root", root or sim_root, "--config", config, "--log", log,
                          "hook", "precreate"],
                 "env": [HOOK_PATH], "timeout": 20}}))
    p = engines.Podman(pm.state, str(hooks))
    p.log = log
    return p


def _runc(live_env, tmp_path, config, env, ann, root=None, script="env; gpucheck /dev/nvidia1"):
    """runc with nvbind as the createRuntime hook, under `config`."""
    import engines
    sim_root, image = live_env
    log = str(tmp_path / "nvbind.log")
    hook = engines.nvbind_hook("createRuntime", root or sim_root, log)
    hook["args"][1:1] = ["--config", config]
    bundle = engines.make_bundle(str(tmp_path / f"b-{uuid.uuid4().hex[:6]}"), image,
                                 ["/bin/sh", "-c", script], [f"{k}={v}" for k, v in env.items()],
                                 {"createRuntime": [hook]})
    with open(f"{bundle}/config.json") as f:
        cfg = json.load(f)
    cfg["annotations"] = ann
    with open(f"{bundle}/config.json", "w") as f:
        json.dump(cfg, f)
    r = engines.run_bundle(bundle, f"nvb-{uuid.uuid4().hex[:8]}")
    r.log = open(log).read().splitlines() if os.path.exists(log) else []
    return r


def _ann_args(ann):
    return [a for k, v in ann.items() for a in ("--annotation", f"{k}={v}")]


@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
def test_bypass_refused_by_podman_precreate(podman_env, mps_root, tmp_path, case):
    _id, text, env, ann, words = case
    pm = _podman(podman_env, tmp_path, _config(tmp_path, text), mps_root)
    r = pm.run(["gpucheck", "/dev/nvidia1"], env=env, extra=_ann_args(ann))
    assert r.returncode != 0, r.stdout      # podman does not start the container
    entry = json.loads(open(pm.log).read().splitlines()[-1])
    assert entry["outcome"] == "error" and words in entry["error"], entry


@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
def test_bypass_refused_by_runc_create_runtime(live_env, mps_root, tmp_path, case):
    _id, text, env, ann, words = case
    r = _runc(live_env, tmp_path, _config(tmp_path, text), env, ann, mps_root)
    assert r.returncode != 0 and "open /dev/nvidia1: ENXIO" not in r.stdout
    entry = json.loads(r.log[-1])
    assert entry["outcome"] == "error" and words in entry["error"], entry


def test_allowed_admin_profile_is_selectable(podman_env, tmp_path):
    pm = _podman(podman_env, tmp_path, _config(tmp_path, 'allowed_profiles = ["lab"]\n' + LAB))
    r = pm.run(["/bin/sh", "-c", "ls /hostetc; gpucheck /dev/nvidia1"],
               env={"NVIDIA_VISIBLE_DEVICES": "1"}, extra=_ann_args({"nvbind.io/profile": "lab"}))
    assert r.returncode == 0 and "open /dev/nvidia1: ENXIO" in r.stdout, r.stderr
    entry = next(json.loads(x) for x in open(pm.log) if json.loads(x)["stage"] == "precreate")
    assert entry["profile"] == "lab" and entry["outcome"] == "ok"


def test_virtual_floor_holds_in_podman(podman_env, mps_root, tmp_path):
    """The admin's default profile is virtual with limits: selecting the built-in 'default'
    profile keeps them, and the container's own CUDA_MPS_* values are replaced."""
    pm = _podman(podman_env, tmp_path, _config(tmp_path, VIRTUAL), mps_root)
    r = pm.run(["/bin/sh", "-c", "env; gpucheck /dev/nvidia1"],
               env={"NVIDIA_VISIBLE_DEVICES": "1", "NVBIND_PROFILE": "default",
                    "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=999999M",
                    "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "100"},
               extra=_ann_args({"nvbind.io/memory-limit": "1G"}))
    assert r.returncode == 0, r.stderr
    env = [line for line in r.stdout.splitlines() if line.startswith("CUDA_MPS_")]
    assert "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=1024M" in env        # lowered: allowed
    assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=25" in env
    assert "CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps" in env
    assert len([e for e in env if e.startswith("CUDA_MPS_PINNED")]) == 1
    assert "open /dev/nvidia1: ENXIO" in r.stdout


def test_virtual_limits_cannot_be_skipped_at_create_runtime(live_env, mps_root, tmp_path):
    """createRuntime cannot set env: a container without the admin's MPS limits is refused."""
    r = _runc(live_env, tmp_path, _config(tmp_path, VIRTUAL), {"NVIDIA_VISIBLE_DEVICES": "1"}, {},
              mps_root)
    assert r.returncode != 0
    assert "this stage cannot set the environment" in json.loads(r.log[-1])["error"]


def test_unprivileged_annotation_gated_like_env(podman_env, tmp_path):
    pm = _podman(podman_env, tmp_path, _config(tmp_path, "[sources]\nenv_unprivileged = false\n"))
    r = pm.run(["gpucheck", "/dev/nvidia0", "/dev/nvidia1"], extra=_ann_args({"nvbind.io/gpus": "all"}))
    assert "open /dev/nvidia0: ENOENT" in r.stdout, r.stderr and "open /dev/nvidia1: ENOENT" in r.stdout
    # a privileged container (CAP_SYS_ADMIN) may still ask
    r = pm.run(["gpucheck", "/dev/nvidia1"], extra=["--cap-add", "SYS_ADMIN"]
               + _ann_args({"nvbind.io/gpus": "1"}))
    assert "open /dev/nvidia1: ENXIO" in r.stdout, r.stdout + r.stderr


def test_log_level_error_logs_only_failures(podman_env, tmp_path):
    pm = _podman(podman_env, tmp_path, _config(tmp_path, 'log_level = "error"\n'))
    ok = ["/bin/sh", "-c", "exit 0"]
    assert pm.run(ok).returncode == 0                                       # no GPU
    assert pm.run(ok, env={"NVIDIA_VISIBLE_DEVICES": "1"}).returncode == 0   # GPU
    assert not os.path.exists(pm.log) or open(pm.log).read() == ""
    assert pm.run(ok, env={"NVIDIA_VISIBLE_DEVICES": "7"}).returncode != 0   # refused
    lines = open(pm.log).read().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["outcome"] == "error"


def test_every_door_same_decision(live_env, tmp_path):
    """One container, one configuration, every door: precreate, the runtime shim, plan,
    createRuntime (through runc) and the CDI spec give the same GPUs, nodes and mounts."""
    root, _image = live_env
    config = _config(tmp_path, 'capabilities = ["compute", "utility", "video"]\n'
                               'allowed_profiles = ["ai-ml"]\n')
    env = {"NVIDIA_VISIBLE_DEVICES": "1", "NVIDIA_DRIVER_CAPABILITIES": "compute,utility"}
    cfg = base_config(env=[f"{k}={v}" for k, v in env.items()])
    common = ["--root", root, "--config", config]
    nv_env = {"NVBIND_CACHE_DIR": str(tmp_path / "cache")}
    # precreate
    r = run_nvbind(common + ["hook", "precreate"], json.dumps(cfg), env=nv_env)
    assert r.returncode == 0, r.stderr
    pre = json.loads(r.stdout)
    # the runtime shim (the real runtime replaced by /bin/true: only the edit is compared)
    bundle = tmp_path / "shim-bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(cfg))
    r = run_nvbind(common + ["runtime", "create", "--bundle", str(bundle), "c1"],
                   env={**nv_env, "NVBIND_RUNTIME": "/bin/true"})
    assert r.returncode == 0, r.stderr
    shim = json.loads((bundle / "config.json").read_text())
    # plan
    (tmp_path / "plan-bundle").mkdir()
    (tmp_path / "plan-bundle" / "config.json").write_text(json.dumps(cfg))
    r = run_nvbind(common + ["plan", "--bundle", str(tmp_path / "plan-bundle"), "--json"], env=nv_env)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    # createRuntime through runc
    live = _runc(live_env, tmp_path, config, env, {})
    assert live.returncode == 0, live.stderr
    live_entry = json.loads(live.log[-1])
    # CDI
    r = run_nvbind(common + ["cdi", "generate", "--capabilities", "compute,utility"], env=nv_env)
    assert r.returncode == 0, r.stderr
    spec = json.loads(r.stdout)
    dev = next(d for d in spec["devices"] if d["name"] == "1")

    def nodes(c):
        return sorted(d["path"] for d in c["linux"]["devices"])

    def mounts(c):
        return sorted(m["destination"] for m in c["mounts"] if m.get("type") == "bind")

    assert nodes(pre) == nodes(shim) == sorted(d["path"] for d in plan["edits"]["devices"]) \
        == sorted(live_entry["devices"]) \
        == sorted(n["path"] for n in spec["containerEdits"]["deviceNodes"] + dev["containerEdits"]["deviceNodes"])
    assert mounts(pre) == mounts(shim) == sorted(m["destination"] for m in plan["edits"]["mounts"]) \
        == sorted(m["containerPath"] for m in spec["containerEdits"]["mounts"])
    gpus = [e for e in pre["process"]["env"] if e.startswith("NVBIND_GPUS=")]
    assert gpus == [e for e in shim["process"]["env"] if e.startswith("NVBIND_GPUS=")]
    assert gpus == ["NVBIND_GPUS=" + ",".join(live_entry["gpus"])] == ["NVBIND_GPUS=" + ",".join(plan["edits"]["gpus"])]
    assert plan["decision"]["profile"] == live_entry["profile"] == "default"
    assert "/dev/nvidia1" in nodes(pre) and "/dev/nvidia0" not in nodes(pre)
