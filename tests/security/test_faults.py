"""Faults: no NVML, no driver, full disks; fail closed for GPU requests, open for the rest."""
import json
import os
import subprocess

import pytest

from conftest import IS_ROOT, base_config, run_nvbind
from nvbind.host import inventory, procfs


def test_nvml_missing_or_failing_falls_back_to_procfs(monkeypatch):
    import nvbind.host.nvml as nvml

    class Broken:
        def __init__(self, *a):
            raise RuntimeError("NVML Shared Library Not Found")
    monkeypatch.setattr(nvml, "NvmlBackend", Broken)
    backend, note = inventory.backend_for("/")
    assert isinstance(backend, procfs.ProcfsBackend) and "NVML Shared Library Not Found" in note
    with pytest.raises(RuntimeError):
        inventory.backend_for("/", "nvml")     # asked for NVML explicitly: the error shows


def test_no_driver_gpu_request_refused_others_untouched(tmp_path):
    empty = str(tmp_path)
    cfg = json.dumps(base_config(env=["NVIDIA_VISIBLE_DEVICES=0"]))
    r = run_nvbind(["--root", empty, "hook", "precreate"], cfg)
    assert r.returncode == 2 and r.stdout == b"" and b"no NVIDIA driver was found" in r.stderr
    text = json.dumps(base_config(env=["NVIDIA_VISIBLE_DEVICES=void"]), indent=1)
    r = run_nvbind(["--root", empty, "hook", "precreate"], text)
    assert r.returncode == 0 and r.stdout == text.encode()


def test_broken_config_never_harms_a_container_without_request(tmp_path):
    bad = tmp_path / "config.toml"
    bad.write_text("this is not toml [")
    for env in ([], ["NVIDIA_VISIBLE_DEVICES=void"], ["NVIDIA_VISIBLE_DEVICES="]):
        text = json.dumps(base_config(env=env))
        r = run_nvbind(["--config", str(bad), "hook", "precreate"], text)
        assert r.returncode == 0 and r.stdout == text.encode(), r.stderr
    r = run_nvbind(["--config", str(bad), "hook", "precreate"],
                   json.dumps(base_config(env=["NVIDIA_VISIBLE_DEVICES=0"])))
    assert r.returncode == 2 and b"not valid TOML" in r.stderr       # fail closed


@pytest.fixture
def full_disk(tmp_path):
    if not IS_ROOT:
        pytest.skip("needs root to mount a tmpfs")
    d = tmp_path / "full"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,nr_inodes=64", "tmpfs", str(d)], check=True)
    (d / "leases").mkdir()
    (d / "cache").mkdir()
    try:
        with open(d / "filler", "wb") as f:
            while True:
                f.write(b"x" * 4096)
                f.flush()
    except OSError:
        pass
    yield d
    subprocess.run(["umount", str(d)], check=True)


def test_disk_full_for_log_cache_and_leases(full_disk, sim_root, tmp_path):
    cfg_file = tmp_path / "config.toml"
    cfg_file.write_text(f'lease_dir = "{full_disk}/leases"\n')
    env = {"NVBIND_LOG": str(full_disk / "nvbind.log"), "NVBIND_CACHE_DIR": str(full_disk / "cache")}
    cfg = json.dumps(base_config(env=["NVIDIA_VISIBLE_DEVICES=1"]))
    r = run_nvbind(["--root", sim_root, "--config", str(cfg_file), "hook", "precreate"], cfg, env=env)
    assert r.returncode == 0, r.stderr
    assert "/dev/nvidia1" in [d["path"] for d in json.loads(r.stdout)["linux"]["devices"]]
    assert b"cannot write log" in r.stderr and b"cannot write the inventory cache" in r.stderr
    excl = json.dumps(base_config(env=["NVIDIA_VISIBLE_DEVICES=1"],
                                  annotations={"nvbind.io/isolation": "exclusive"}))
    r = run_nvbind(["--root", sim_root, "--config", str(cfg_file), "hook", "precreate"], excl, env=env)
    assert r.returncode == 0, r.stderr
    edited = json.loads(r.stdout)
    entry = edited["hooks"]["createRuntime"][0]      # the lease is taken there, by container id
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(edited))
    state = json.dumps({"ociVersion": "1.0.2", "id": "x", "pid": os.getpid(), "bundle": str(bundle)})
    r = run_nvbind(entry["args"][1:], state, env=env)
    assert r.returncode == 1 and r.stdout == b""
    assert b"cannot write the lease" in r.stderr and b"refusing the exclusive container" in r.stderr
    assert os.listdir(full_disk / "leases") in ([], [".lock"])
