"""The device plugin's dependencies never reach a hook: `nvbind hook precreate` (and the
CLI itself) import no grpc, protobuf or nvbind.k8s module."""
import json
import os
import subprocess
import sys

from conftest import base_config

HEAVY = ("grpc", "google.protobuf", "google", "nvbind.k8s")


def imported(args, stdin=b"", env=None):
    e = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "NVBIND_LOG": "off", **(env or {})}
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "nvbind", *args], input=stdin,
                       capture_output=True, env=e, timeout=60)
    mods = {line.split("|")[-1].strip() for line in r.stderr.decode().splitlines()
            if line.startswith("import time:") and "|" in line}
    return r, mods


def test_precreate_imports_no_grpc(sim_root, tmp_path):
    cfg = base_config(env=["NVIDIA_VISIBLE_DEVICES=0"])
    r, mods = imported(["--root", sim_root, "hook", "precreate"], json.dumps(cfg).encode(),
                       {"NVBIND_CACHE_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert "/dev/nvidia0" in r.stdout.decode()          # it did inject: the path was walked
    assert "nvbind.core.edits" in mods                        # and importtime saw the modules
    bad = sorted(m for m in mods if m.split(".")[0] in {"grpc", "google"} or m.startswith("nvbind.k8s"))
    assert not bad, bad


def test_device_plugin_verb_does_import_them(sim_root, tmp_path):
    """The check above can fail: the same measurement sees grpc when the plugin serves."""
    import signal
    import time

    import pytest
    pytest.importorskip("grpc")
    cfg = tmp_path / "c.toml"
    cfg.write_text("[device_plugin]\npoll_interval = 0.2\n")
    (tmp_path / "dp").mkdir()
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "NVBIND_LOG": "off",
           "NVBIND_CONFIG": str(cfg), "NVBIND_CACHE_DIR": str(tmp_path)}
    p = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "nvbind", "--root", sim_root,
                          "device-plugin", "--plugin-dir", str(tmp_path / "dp")],
                         stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "dp" / "nvbind-gpu.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err.decode()[-2000:]
    mods = {line.split("|")[-1].strip() for line in err.decode().splitlines()
            if line.startswith("import time:") and "|" in line}
    assert {"grpc", "google.protobuf", "nvbind.k8s.api_pb2"} <= mods
