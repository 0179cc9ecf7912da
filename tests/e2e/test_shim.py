"""The runtime shim driven exactly as containerd/docker drive a runtime, runc underneath."""
import json
import os
import subprocess
import time
import uuid

from conftest import nvbind_cmd


def shim(args, root, log, **kw):
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "NVBIND_ROOT": root, "NVBIND_LOG": log}
    return subprocess.run(nvbind_cmd() + ["runtime", *args], env=env, **kw)


def test_create_start_delete(live_env, tmp_path):
    import engines
    root, image = live_env
    log = str(tmp_path / "log")
    bundle = engines.make_bundle(str(tmp_path / "b"), image,
                                 ["gpucheck", "/dev/nvidia1", "/dev/nvidia0"],
                                 ["NVIDIA_VISIBLE_DEVICES=1"])
    before = open(f"{bundle}/config.json").read()
    cid = f"shim-{uuid.uuid4().hex[:8]}"
    state_root = str(tmp_path / "state")
    out = open(tmp_path / "out", "w")
    try:
        # the container keeps the stdio it is created with (files here, as containerd's
        # fifos): a pipe read to EOF would wait for the container
        r = shim(["--root", state_root, "--log-format", "json", "create", "--bundle", bundle,
                  "--pid-file", str(tmp_path / "pid"), cid], root, log, stdout=out,
                 stderr=out, stdin=subprocess.DEVNULL, timeout=60)
        assert r.returncode == 0, open(tmp_path / "out").read()
        cfg = json.loads(open(f"{bundle}/config.json").read())
        assert cfg != json.loads(before)
        assert "/dev/nvidia1" in [d["path"] for d in cfg["linux"]["devices"]]
        assert any(e.startswith("NVBIND_GPUS=GPU-") for e in cfg["process"]["env"])
        assert not [f for f in os.listdir(bundle) if f.startswith(".config.json")]
        assert shim(["--root", state_root, "start", cid], root, log, timeout=60).returncode == 0
        for _ in range(100):
            st = subprocess.run(["runc", "--root", state_root, "state", cid], capture_output=True,
                                text=True)
            if '"stopped"' in st.stdout:
                break
            time.sleep(0.05)
    finally:
        shim(["--root", state_root, "delete", "--force", cid], root, log, capture_output=True)
        out.close()
    text = open(tmp_path / "out").read()
    assert "open /dev/nvidia1: ENXIO" in text and "open /dev/nvidia0: ENOENT" in text
    assert "dlopen libcuda.so.1: OK" in text
    entries = [json.loads(line) for line in open(log)]
    assert entries[0]["stage"] == "runtime create" and entries[0]["outcome"] == "ok"
    assert subprocess.run(["runc", "--root", state_root, "state", cid],
                          capture_output=True).returncode != 0      # deleted


def test_other_verbs_pass_through(tmp_path):
    r = shim(["--version"], "/", str(tmp_path / "log"), capture_output=True, text=True)
    assert r.returncode == 0 and "runc version" in r.stdout
    r = shim(["--root", str(tmp_path), "list"], "/", str(tmp_path / "log"), capture_output=True, text=True)
    assert r.returncode == 0 and "ID" in r.stdout
    assert not os.path.exists(tmp_path / "log")


def test_bad_request_fails_create_and_leaves_config(live_env, tmp_path):
    import engines
    root, image = live_env
    bundle = engines.make_bundle(str(tmp_path / "b"), image, ["true"], ["NVIDIA_VISIBLE_DEVICES=7"])
    before = open(f"{bundle}/config.json").read()
    r = shim(["--root", str(tmp_path / "s"), "create", "--bundle", bundle, "x1"], root,
             str(tmp_path / "log"), capture_output=True, text=True)
    assert r.returncode == 2 and "unknown device '7'" in r.stderr
    assert open(f"{bundle}/config.json").read() == before


def test_called_by_the_runtime_name(tmp_path):
    """docker and containerd call `nvbind-runtime` (a link to nvbind) with runc's arguments."""
    link = tmp_path / "nvbind-runtime"
    os.symlink(nvbind_cmd()[0], link)
    r = subprocess.run([str(link), "--root", str(tmp_path / "s"), "list"], capture_output=True,
                       text=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                       "NVBIND_LOG": str(tmp_path / "log")})
    assert r.returncode == 0 and r.stdout.startswith("ID"), r.stderr
