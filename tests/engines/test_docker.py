"""docker.io 20.10 (Debian 12) with nvbind: the nvbind runtime, `--gpus`, errors, logs."""
from __future__ import annotations

import json
import subprocess

import pytest
from engine_fixtures import IMAGE, docker_env, gpu_host, uninstall  # noqa: F401 - fixtures

pytestmark = pytest.mark.e2e

RUN = ["run", "--rm", "--network", "none"]
CHECK = ["gpucheck", "/dev/nvidia1", "/dev/nvidia0"]


def entries(log):
    try:
        with open(log) as f:
            return [json.loads(line) for line in f]
    except FileNotFoundError:
        return []


def test_install_registers_runtime_and_hook(docker_env):
    cfg = json.load(open(f"{docker_env.node}/etc/docker/daemon.json"))
    assert cfg["runtimes"]["nvbind"] == {"path": "/usr/local/bin/nvbind-runtime"}
    assert cfg["log-driver"] == "json-file"          # the admin's settings are kept
    info = docker_env.cli(["info", "--format", "{{json .Runtimes}}"])
    assert info.returncode == 0 and "nvbind" in json.loads(info.stdout), info.stderr


def test_runtime_gets_exactly_gpu1(docker_env):
    r = docker_env.cli(RUN + ["--runtime", "nvbind", "-e", "NVIDIA_VISIBLE_DEVICES=1", IMAGE] + CHECK)
    assert r.returncode == 0, r.stderr
    assert "open /dev/nvidia1: ENXIO" in r.stdout and "open /dev/nvidia0: ENOENT" in r.stdout
    assert "dlopen libcuda.so.1: OK" in r.stdout
    assert "nvbind" not in r.stdout + r.stderr


def test_no_request_passes_through(docker_env):
    r = docker_env.cli(RUN + ["--runtime", "nvbind", IMAGE, "sh", "-c", "ls /dev; env"])
    assert r.returncode == 0, r.stderr
    assert "nvidia" not in r.stdout and "NVBIND" not in r.stdout


def test_nothing_nvbind_says_lands_in_container_output(docker_env):
    """The shim runs with the container's stdio: notes go to nvbind's log instead."""
    name = "nvbind-logs-test"
    r = docker_env.cli(["run", "--name", name, "--network", "none", "--runtime", "nvbind",
                        "-e", "NVIDIA_VISIBLE_DEVICES=1", "-e", "NVBIND_CAPABILITIES=mine", IMAGE,
                        "sh", "-c", "echo container-output; env | grep NVBIND_CAPABILITIES"])
    try:
        assert r.returncode == 0, r.stderr
        logs = docker_env.cli(["logs", name])
        assert logs.returncode == 0
        assert "container-output" in logs.stdout
        # nvbind's marker replaced the container's value (policy), and said so in its log only
        assert "NVBIND_CAPABILITIES=compute,utility" in logs.stdout
        assert "NVBIND_CAPABILITIES=mine" not in logs.stdout
        assert "nvbind" not in logs.stdout + logs.stderr
        noted = [e for e in entries(docker_env.nvbind_log) if e.get("notes")]
        assert any("NVBIND_CAPABILITIES" in n for e in noted for n in e["notes"])
    finally:
        docker_env.cli(["rm", "-f", name])


def test_refused_request_shows_nvbind_error_in_docker_error(docker_env):
    r = docker_env.cli(RUN + ["--runtime", "nvbind", "-e", "NVIDIA_VISIBLE_DEVICES=7", IMAGE, "true"])
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if "nvbind: error:" in line]
    assert lines and "unknown device '7'" in lines[0], r.stderr
    assert "log.json" not in r.stderr          # not the "unable to retrieve OCI runtime error"


def test_gpus_flag_device1_and_all(docker_env):
    """dockerd's own --gpus: its prestart hook is the nvidia-container-runtime-hook that
    `nvbind install --engine docker` provides, which runs `nvbind hook prestart`."""
    r = docker_env.cli(RUN + ["--gpus", "device=1", IMAGE] + CHECK)
    assert r.returncode == 0, r.stderr
    assert "open /dev/nvidia1: ENXIO" in r.stdout and "open /dev/nvidia0: ENOENT" in r.stdout
    last = [e for e in entries(docker_env.nvbind_log) if e.get("stage") == "prestart"][-1]
    assert last["outcome"] == "ok" and len(last["gpus"]) == 1
    r = docker_env.cli(RUN + ["--gpus", "all", IMAGE] + CHECK)
    assert r.returncode == 0, r.stderr
    assert "open /dev/nvidia1: ENXIO" in r.stdout and "open /dev/nvidia0: ENXIO" in r.stdout
    r = docker_env.cli(RUN + ["--gpus", "device=7", IMAGE, "true"])
    assert r.returncode != 0 and "unknown device '7'" in r.stderr, r.stderr


def test_uninstall_restores_daemon_json(docker_env, tmp_path):
    import shutil
    node = str(tmp_path / "node")
    shutil.copytree(docker_env.node, node, symlinks=True)
    # the copy's manifest is the same install; its backup is the admin's original
    before = open(f"{node}/etc/docker/daemon.json.nvbind-backup").read()
    uninstall(node)
    assert open(f"{node}/etc/docker/daemon.json").read() == before
    assert not subprocess.run(["ls", f"{node}/usr/local/bin"], capture_output=True).stdout.strip()
