"""Profiles, configuration, request sources, isolation, requirements, MIG management."""
import json
import os
import socket
import subprocess

import pytest

from conftest import base_config, decide_edits, run_nvbind
from nvbind import settings as config
from nvbind.core import edits, profiles, requirements
from nvbind.errors import InputError, NvbindError
from nvbind.host import inventory
from nvbind.host.model import GpuRecord
from nvbind.host.procfs import ProcfsBackend
from nvbind.core.request import from_config

HOOK = ("/usr/local/bin/nvbind", "nvbind")


def env_of(ed):
    return {e.name: e.value for e in ed.env}


def plan(root, env, ann=None, profile=None, cfg=None, config=None, **build):
    if profile:
        ann = {**(ann or {}), "nvbind.io/profile": profile}
    return decide_edits(lambda devs: inventory.build(root, extra_devices=devs, **build),
                        env, ann, config, cfg, HOOK)


# ---- profile mappings -------------------------------------------------------------------
def test_ai_ml_profile(sim_root):
    ed = plan(sim_root, {"NVIDIA_VISIBLE_DEVICES": "0"}, profile="ai-ml")
    env = env_of(ed)
    assert env["CUDA_CACHE_MAXSIZE"] == str(4096 * 1024 * 1024)
    assert "NVIDIA_TF32_OVERRIDE" not in env            # TF32 on by default: nothing to set
    assert env["NVBIND_MIXED_PRECISION"] == "1"
    assert env["NVBIND_PROFILE"] == "ai-ml"
    assert env["NVBIND_CAPABILITIES"] == "compute,utility"


def test_tensor_cores_off_sets_tf32_override():
    p = profiles.build("x", {"aiml": {"tensor_cores": False, "memory_pool_size": "16GB", "mig": True}})
    env = {k: v for k, v, _ in p.env}
    assert env["NVIDIA_TF32_OVERRIDE"] == "0"
    assert env["NVBIND_MEMORY_POOL_SIZE"] == str(16 << 30)
    assert env["NVBIND_MIG"] == "1"
    assert all(reader for _, _, reader in p.env)


def test_gaming_profile(sim_root):
    ed = plan(sim_root, {"NVIDIA_VISIBLE_DEVICES": "1"}, profile="gaming")
    env = env_of(ed)
    assert env["PROTON_ENABLE_NVAPI"] == "1" and env["DXVK_ENABLE_NVAPI"] == "1"
    assert env["__GL_SYNC_TO_VBLANK"] == "1"
    assert env["__GL_SHADER_DISK_CACHE"] == "1"
    assert env["__GL_SHADER_DISK_CACHE_SIZE"] == str(1024 << 20)
    nodes = {d.path for d in ed.devices}
    assert {"/dev/nvidia-modeset", "/dev/dri/card2", "/dev/dri/renderD129", "/dev/nvidia1"} <= nodes
    mounts = {m.destination for m in ed.mounts}
    assert {"/usr/lib64/libGLX_nvidia.so.550.54.14", "/usr/lib64/libnvidia-ngx.so.550.54.14",
            "/usr/share/vulkan/icd.d/nvidia_icd.json", "/usr/share/glvnd/egl_vendor.d/10_nvidia.json",
            "/usr/lib64/nvidia/wine/nvngx.dll", "/usr/lib64/nvidia/wine/_nvngx.dll"} <= mounts


def test_ultra_low_latency():
    p = profiles.build("g", {"gaming": {"performance_profile": "ultra-low-latency"}})
    env = {k: v for k, v, _ in p.env}
    assert env["__GL_SYNC_TO_VBLANK"] == "0" and env["__GL_MaxFramesAllowed"] == "1"
    assert {"graphics", "display"} <= set(p.capabilities)


def test_every_seed_knob_maps_to_something():
    knobs = {"aiml": ["cuda_cache_mb", "tensor_cores", "mixed_precision", "memory_pool_size", "mig"],
             "gaming": ["dlss", "raytracing", "wine_proton", "vrs", "performance_profile"]}
    values = {"cuda_cache_mb": 100, "memory_pool_size": "1G", "performance_profile": "performance",
              "tensor_cores": False}
    for section, names in knobs.items():
        for n in names:
            base = profiles.build("b", {section: {}})
            p = profiles.build("p", {section: {n: values.get(n, True)}})
            assert (p.env, p.capabilities, p.dlss) != (base.env, base.capabilities, base.dlss) \
                or n == "raytracing", n


@pytest.mark.parametrize("text, value", [("12GB", 12 << 30), ("512M", 512 << 20), ("1.5GiB", 3 << 29),
                                         ("1024", 1024), ("8 GB", 8 << 30)])
def test_sizes(text, value):
    assert profiles.parse_size(text, "x") == value


@pytest.mark.parametrize("text", ["", "GB", "-1G", "12XB", "lots"])
def test_bad_sizes(text):
    with pytest.raises(InputError):
        profiles.parse_size(text, "x")


# ---- configuration ----------------------------------------------------------------------
def write(tmp_path, text, name="config.toml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("text, words", [
    ('default_profile = 3\n', "default_profile: 3 is not of type 'string'"),
    ('[profiles.x]\nisolation = "solo"\n', "profiles.x.isolation: 'solo' is not one of"),
    ('[profiles.x.aiml]\ncuda_cache_mb = 9000\n', "profiles.x.aiml.cuda_cache_mb: 9000 is greater"),
    ('[sources]\nenv = "yes"\n', "sources.env: 'yes' is not of type 'boolean'"),
    ('bogus = 1\n', "Additional properties are not allowed ('bogus'"),
    ('root = "relative"\n', "root: 'relative' does not match"),
    ('[profiles.x\n', "not valid TOML"),
])
def test_bad_config_names_file_key_and_problem(tmp_path, text, words):
    path = write(tmp_path, text)
    r = run_nvbind(["--config", path, "config", "validate"])
    assert r.returncode == 2
    err = r.stderr.decode()
    assert err.startswith(f"nvbind: error: {path}: ") and words in err, err
    # and the hook refuses to guess
    r = run_nvbind(["--config", path, "hook", "precreate"],
                   json.dumps(base_config(env=["NVIDIA_VISIBLE_DEVICES=0"])),
                   env={"NVBIND_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 2 and r.stdout == b""


def test_missing_explicit_config(tmp_path):
    r = run_nvbind(["--config", str(tmp_path / "nope.toml"), "config", "show"])
    assert r.returncode == 2 and b"does not exist" in r.stderr


def test_config_cache_is_used_and_invalidated(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("NVBIND_CACHE_DIR", str(cache))
    path = write(tmp_path, 'default_profile = "ai-ml"\n')
    assert config.load(path)["default_profile"] == "ai-ml"
    (entry,) = list(cache.iterdir())
    # a changed file is read again; the cached copy is not trusted
    os.utime(path, ns=(1, 1))
    with open(path, "w") as f:
        f.write('default_profile = "gaming"\n')
    assert config.load(path)["default_profile"] == "gaming"
    # a corrupt cache entry is ignored and rebuilt
    entry.write_text("{garbage")
    assert config.load(path)["default_profile"] == "gaming"
    # validation is not repeated while the file is unchanged
    import nvbind.settings as c
    monkeypatch.setattr(c, "schema_errors", lambda doc: pytest.fail("validated again"))
    assert config.load(path)["default_profile"] == "gaming"


def test_user_profile_and_default(tmp_path, sim_root, monkeypatch):
    monkeypatch.setenv("NVBIND_CACHE_DIR", str(tmp_path / "cache"))
    path = write(tmp_path, '''default_profile = "lab"
[profiles.lab]
capabilities = ["compute", "utility"]
env = { OMP_NUM_THREADS = "8" }
mounts = [{ host_path = "/etc/OpenCL/vendors", container_path = "/opt/icd" }]
''')
    r = run_nvbind(["--root", sim_root, "--config", path, "hook", "precreate"],
                   json.dumps(base_config(env=["NVIDIA_VISIBLE_DEVICES=0"])),
                   env={"NVBIND_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert "OMP_NUM_THREADS=8" in out["process"]["env"] and "NVBIND_PROFILE=lab" in out["process"]["env"]
    m = next(m for m in out["mounts"] if m["destination"] == "/opt/icd")
    assert m["source"] == sim_root + "/etc/OpenCL/vendors" and "ro" in m["options"]
    r = run_nvbind(["--root", sim_root, "--config", path, "hook", "precreate"],
                   json.dumps(base_config(env=["NVIDIA_VISIBLE_DEVICES=0", "NVBIND_PROFILE=nope"])),
                   env={"NVBIND_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 2 and b"profile 'nope' (env NVBIND_PROFILE) may not be selected" in r.stderr
    assert b"allowed_profiles = [default, ai-ml, gaming]" in r.stderr


def test_offered_capabilities(tmp_path, sim_root):
    path = write(tmp_path, 'capabilities = ["compute", "utility"]\n')
    r = run_nvbind(["--root", sim_root, "--config", path, "hook", "precreate"],
                   json.dumps(base_config(env=["NVIDIA_VISIBLE_DEVICES=0",
                                               "NVIDIA_DRIVER_CAPABILITIES=graphics"])),
                   env={"NVBIND_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 2 and b"capability graphics (from env NVIDIA_DRIVER_CAPABILITIES) " \
        b"is not offered: capabilities = [compute, utility]" in r.stderr


# ---- request sources ----------------------------------------------------------------------
def test_env_for_unprivileged_can_be_refused(sim_root):
    conf = {"sources": {"env_unprivileged": False}}
    ed = plan(sim_root, {"NVIDIA_VISIBLE_DEVICES": "0"}, config=conf)
    assert ed.empty and any("sources.env_unprivileged = false" in n for n in ed.notes)
    priv = {"process": {"capabilities": {"bounding": ["CAP_SYS_ADMIN"]}}}
    assert not plan(sim_root, {"NVIDIA_VISIBLE_DEVICES": "0"}, cfg=priv, config=conf).empty


def test_volume_mount_source():
    cfg = base_config()
    cfg["mounts"].append({"destination": "/var/run/nvidia-container-devices/1", "source": "/dev/null",
                          "type": "bind"})
    assert from_config({}, {}, cfg).empty                  # off by default
    r = from_config({"NVIDIA_VISIBLE_DEVICES": "0"}, {}, cfg, {"mounts": True})
    assert r.devices == ("1",)


def test_annotations_can_be_disabled():
    r = from_config({}, {"nvbind.io/gpus": "0"}, None, {"annotations": False})
    assert r.empty


@pytest.mark.parametrize("ann, words", [({"nvbind.io/isolation": "solo"}, "not one of"),
                                        ({"nvbind.io/memory-limit": "lots"}, "not a size")])
def test_bad_annotation_values(ann, words):
    with pytest.raises(InputError, match=words):
        from_config({}, {"nvbind.io/gpus": "0", **ann})


# ---- MIG management ------------------------------------------------------------------------
def test_mig_config_devices_privileged_only(sim_root):
    with pytest.raises(InputError, match="privileged"):
        from_config({"NVIDIA_VISIBLE_DEVICES": "0", "NVIDIA_MIG_CONFIG_DEVICES": "all"}, {}, base_config())
    cfg = base_config()
    cfg["process"]["capabilities"] = {"bounding": ["CAP_SYS_ADMIN"]}
    ed = plan(sim_root, {"NVIDIA_VISIBLE_DEVICES": "0", "NVIDIA_MIG_CONFIG_DEVICES": "all",
                         "NVIDIA_MIG_MONITOR_DEVICES": "all"},
              cfg={"process": {"capabilities": {"bounding": ["CAP_SYS_ADMIN"]}}})
    nodes = {d.path for d in ed.devices}
    assert {"/dev/nvidia-caps/nvidia-cap1", "/dev/nvidia-caps/nvidia-cap2"} <= nodes


# ---- isolation ----------------------------------------------------------------------------
def test_exclusive_sets_leases_and_poststop_hook(sim_root):
    ed = plan(sim_root, {"NVIDIA_VISIBLE_DEVICES": "1"}, {"nvbind.io/isolation": "exclusive"})
    assert ed.isolation == "exclusive" and len(ed.leases) == 1 and ed.leases[0].startswith("GPU-")
    assert [h.stage for h in ed.hooks] == ["createContainer", "createRuntime", "poststop"]
    assert ed.hooks[1].args[-4:] == ("hook", "createRuntime", "--lease", ed.leases[0])


def with_mps(sim_root, tmp_path):
    root = str(tmp_path / "root")
    subprocess.run(["cp", "-a", sim_root, root], check=True)
    os.makedirs(root + "/tmp/nvidia-mps")
    os.makedirs(root + "/var/log/nvidia-mps")
    s = socket.socket(socket.AF_UNIX)
    s.bind(root + "/tmp/nvidia-mps/control")
    s.close()
    return root


def test_virtual_needs_mps(sim_root):
    with pytest.raises(NvbindError, match="running CUDA MPS control daemon"):
        plan(sim_root, {"NVIDIA_VISIBLE_DEVICES": "1"}, {"nvbind.io/isolation": "virtual"})


def test_virtual_with_mps(sim_root, tmp_path):
    root = with_mps(sim_root, tmp_path)
    ed = plan(root, {"NVIDIA_VISIBLE_DEVICES": "0,1"},
              {"nvbind.io/isolation": "virtual", "nvbind.io/memory-limit": "12GB"})
    env = env_of(ed)
    assert env["CUDA_MPS_PIPE_DIRECTORY"] == "/tmp/nvidia-mps"
    assert env["CUDA_MPS_LOG_DIRECTORY"] == "/var/log/nvidia-mps"
    assert env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=12288M,1=12288M"
    m = next(m for m in ed.mounts if m.destination == "/tmp/nvidia-mps")
    assert m.source == root + "/tmp/nvidia-mps" and "ro" not in m.options and "noexec" in m.options
    conf = {"default_profile": "v", "profiles": {"v": {"isolation": "virtual",
                                                       "mps_thread_percentage": 50, "memory_limit": "1G"}}}
    ed = plan(root, {"NVIDIA_VISIBLE_DEVICES": "0"}, config=conf)
    assert env_of(ed)["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "50"
    assert env_of(ed)["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=1024M"


def test_fifty_concurrent_exclusive_creates_one_wins(sim_root, tmp_path):
    """precreate decides and adds a createRuntime entry that takes the lease; 50 containers
    running that entry at once (each its own id and bundle, as runc hands them): one wins."""
    from conftest import nvbind_cmd
    leases = tmp_path / "leases"
    cfgfile = write(tmp_path, f'lease_dir = "{leases}"\n')
    env = {"PATH": "/usr/bin:/bin", "NVBIND_LOG": "off", "NVBIND_CACHE_DIR": str(tmp_path / "cache")}
    r = run_nvbind(["--root", sim_root, "--config", cfgfile, "hook", "precreate"],
                   json.dumps(base_config(env=["NVIDIA_VISIBLE_DEVICES=1"],
                                          annotations={"nvbind.io/isolation": "exclusive"})), env=env)
    assert r.returncode == 0, r.stderr
    edited = json.loads(r.stdout)
    assert not os.path.exists(leases)                  # precreate takes no lease itself
    entry = edited["hooks"]["createRuntime"][0]
    assert entry["env"] == ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
    procs = []
    for i in range(50):
        bundle = tmp_path / f"bundle{i}"
        bundle.mkdir()
        (bundle / "config.json").write_text(json.dumps(edited))
        procs.append((bundle, subprocess.Popen([entry["path"], *entry["args"][1:]],
                                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                               stderr=subprocess.PIPE, env=env)))
    for i, (bundle, p) in enumerate(procs):
        p.stdin.write(json.dumps({"ociVersion": "1.0.2", "id": f"c{i}", "status": "creating",
                                  "pid": os.getpid(), "bundle": str(bundle)}).encode())
        p.stdin.close()
    results = [(p.wait(), p.stdout.read(), p.stderr.read()) for _, p in procs]
    winners = [i for i, (rc, _, _) in enumerate(results) if rc == 0]
    assert len(winners) == 1, [r[2] for r in results][:3]
    held = [err for rc, _, err in results if rc != 0]
    assert all(b"is held exclusively by container" in e and f"c{winners[0]}".encode() in e
               for e in held), held[:2]
    # poststop of the winner releases it; then another container gets the GPU
    state = json.dumps({"ociVersion": "1.0.2", "id": f"c{winners[0]}", "status": "stopped",
                        "bundle": str(tmp_path / f"bundle{winners[0]}")})
    r = run_nvbind(["--config", cfgfile, "hook", "poststop"], state, env=env)
    assert r.returncode == 0 and os.listdir(leases) == [".lock"]
    # twice, and for a stranger: still fine
    assert run_nvbind(["--config", cfgfile, "hook", "poststop"], state).returncode == 0
    other = 7 if winners[0] != 7 else 8
    r = subprocess.run([entry["path"], *entry["args"][1:]], capture_output=True, env=env,
                       input=json.dumps({"ociVersion": "1.0.2", "id": f"c{other}", "pid": os.getpid(),
                                         "bundle": str(tmp_path / f"bundle{other}")}).encode())
    assert r.returncode == 0, r.stderr


def test_stale_lease_is_reclaimed(tmp_path):
    from nvbind.apply import leases
    gone = tmp_path / "gone"
    gone.mkdir()
    lease_dir = str(tmp_path / "l")
    leases.acquire(lease_dir, ["GPU-1"], leases.holder("a", str(gone), os.getpid()))
    with pytest.raises(NvbindError, match="held exclusively"):
        leases.acquire(lease_dir, ["GPU-1"], leases.holder("b", str(tmp_path), os.getpid()))
    gone.rmdir()
    notes = leases.acquire(lease_dir, ["GPU-1"], leases.holder("b", str(tmp_path), os.getpid()))
    assert "reclaimed stale lease" in notes[0]


# ---- requirements -------------------------------------------------------------------------
class FakeNvml(ProcfsBackend):
    name = "fake-nvml"

    def cuda_version(self):
        return "12.4"

    def gpus(self):
        return [GpuRecord(r.minor, r.uuid, r.bus_id, r.model, r.migs, arch="9.0", brand="tesla")
                for r in super().gpus()]


@pytest.mark.parametrize("expr, ok", [
    ("cuda>=12.2", True), ("cuda>=12.6", False), ("driver>=535", True), ("driver<550", False),
    ("arch=9.0", True), ("arch=8.0", False), ("brand=tesla", True), ("brand=geforce", False),
    ("cuda>=12.6 brand=tesla", True),                 # OR
    ("cuda>=12.2,brand=geforce", False),              # AND
    ("cuda>=12.2,driver>=550.54 arch=7.0", True),
    ("driver>=550.54.15", False),
])
def test_requirements(sim_root, expr, ok):
    inv = inventory.build(sim_root, FakeNvml(sim_root))
    env = {"NVIDIA_VISIBLE_DEVICES": "1", "NVIDIA_REQUIRE_CUDA": expr}
    if ok:
        decide_edits(inv, env)
    else:
        with pytest.raises(NvbindError) as e:
            decide_edits(inv, env)
        assert expr in str(e.value) and ("is 12.4" in str(e.value) or "is 550.54.14" in str(e.value)
                                         or "is 9.0" in str(e.value) or "is tesla" in str(e.value))


def test_requirements_disable_and_several_vars(sim_root):
    inv = inventory.build(sim_root, FakeNvml(sim_root))
    env = {"NVIDIA_VISIBLE_DEVICES": "1", "NVIDIA_REQUIRE_CUDA": "cuda>=12.0", "NVIDIA_REQUIRE_X": "arch=8.0"}
    with pytest.raises(NvbindError, match="arch=8.0"):
        decide_edits(inv, env)
    env["NVIDIA_DISABLE_REQUIRE"] = "1"
    decide_edits(inv, env)


def test_requirement_unknown_on_procfs(sim_root):
    with pytest.raises(NvbindError, match="cuda unknown on this host"):
        decide_edits(inventory.build(sim_root), {"NVIDIA_VISIBLE_DEVICES": "1",
                                                 "NVIDIA_REQUIRE_CUDA": "cuda>=12.0"})


@pytest.mark.parametrize("expr", ["cuda>>12", "gpu=1", "cuda>=twelve"])
def test_bad_requirement_expressions(expr):
    with pytest.raises(InputError):
        requirements.check([expr], {"cuda": "12.4", "driver": "550.1"}, [None])


# ---- surge import ---------------------------------------------------------------------------
SURGE = '''[services.steam]
workload_type = "gaming"
gpu_enabled = true
[services.steam.gaming]
dlss_enabled = true
performance_profile = "ultra-low-latency"
wine_proton_enabled = true
[services.steam.gpu]
isolation_level = "exclusive"
memory_limit = "8GB"
[services.ollama]
workload_type = "ai-ml"
gpu_enabled = true
[services.ollama.aiml]
cuda_cache_mb = 2048
tensor_cores_enabled = false
[services.web]
gpu_enabled = false
'''


def test_import_surge(tmp_path):
    src = write(tmp_path, SURGE, "surge.toml")
    r = run_nvbind(["config", "import-surge", src])
    assert r.returncode == 0, r.stderr
    assert b"service web: gpu_enabled is not true" in r.stderr
    out = write(tmp_path, r.stdout.decode(), "imported.toml")
    assert run_nvbind(["config", "validate", out]).returncode == 0
    import tomllib
    doc = tomllib.loads(r.stdout.decode())
    steam = profiles.build("steam", doc["profiles"]["steam"])
    env = {k: v for k, v, _ in steam.env}
    assert steam.isolation == "exclusive" and steam.memory_limit == 8 << 30 and steam.dlss
    assert env["PROTON_ENABLE_NVAPI"] == "1" and env["__GL_SYNC_TO_VBLANK"] == "0"
    ollama = profiles.build("ollama", doc["profiles"]["ollama"])
    assert dict((k, v) for k, v, _ in ollama.env)["NVIDIA_TF32_OVERRIDE"] == "0"
