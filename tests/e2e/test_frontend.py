"""nvbind-runtime's exec front end (packaging/frontend/nvbind-runtime.c), the program docker
and containerd run for every verb: it must exec the real runtime without Python for
everything but a create/run whose config.json could ask for a GPU, and hand exactly those
to nvbind. Driven with the built one-dir tree (make dist) and runc; which programs ran is
read from strace's execve trace, not inferred."""
import json
import os
import shutil
import subprocess
import time
import uuid

import pytest

from conftest import IS_ROOT, REPO

TREE = os.path.join(REPO, "dist", "nvbind-dir")
FRONT = os.path.join(TREE, "nvbind-runtime")
NVBIND = os.path.join(TREE, "nvbind")
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

pytestmark = [
    pytest.mark.skipif(not os.path.exists(FRONT), reason="dist/nvbind-dir not built (make test runs make dist)"),
    pytest.mark.skipif(not shutil.which("strace"), reason="strace missing (make apt installs it)"),
]


def traced(tmp_path, argv, env, **kw):
    """(completed process, [paths execve'd]) of argv run under strace -f."""
    trace = tmp_path / f"trace-{uuid.uuid4().hex[:6]}"
    r = subprocess.run(["strace", "-f", "-qq", "-e", "trace=execve", "-o", str(trace), *argv],
                       env=env, timeout=60, **kw)
    execs = []
    for line in trace.read_text().splitlines():
        if "execve(" in line and "= 0" in line.rsplit(")", 1)[-1]:
            execs.append(line.split('execve("', 1)[1].split('"', 1)[0])
    return r, execs


def recorder(tmp_path):
    """A stand-in real runtime that writes its arguments, one per line, and succeeds."""
    path = tmp_path / "realrt"
    out = tmp_path / "realrt.args"
    path.write_text(f'#!/bin/sh\nprintf "%s\\n" "$0" "$@" > {out}\n')
    path.chmod(0o755)
    return str(path), out


def bundle(tmp_path, env=(), annotations=None, raw=None):
    b = tmp_path / f"b-{uuid.uuid4().hex[:6]}"
    b.mkdir()
    (b / "rootfs").mkdir()
    cfg = {"ociVersion": "1.0.2", "process": {"args": ["true"], "cwd": "/", "env": ["PATH=/bin", *env]},
           "root": {"path": "rootfs"}}
    if annotations:
        cfg["annotations"] = annotations
    (b / "config.json").write_bytes(raw if raw is not None else json.dumps(cfg).encode())
    return str(b)


def test_front_end_is_static_and_not_glibc():
    """Linked statically against musl (packaging/nvbind.spec): no program interpreter, and
    none of glibc's start-up (its tunables and CPU probing, ~0.33 ms of every verb)."""
    with open(FRONT, "rb") as f:
        data = f.read()
    headers = subprocess.run(["readelf", "-lW", FRONT], capture_output=True, text=True,
                             check=True, timeout=60).stdout
    assert "Requesting program interpreter" not in headers
    assert b"GLIBC_TUNABLES" not in data and b"glibc.cpu" not in data


def test_pass_through_verbs_exec_runc_without_python(tmp_path):
    state = tmp_path / "state"
    env = {"PATH": PATH}
    for verb in (["list"], ["state", "nonexistent"], ["--version"], ["delete", "--force", "nonexistent"]):
        r, execs = traced(tmp_path, [FRONT, "--root", str(state), *verb], env, capture_output=True, text=True)
        plain = subprocess.run(["runc", "--root", str(state), *verb], capture_output=True, text=True)
        assert (r.returncode, r.stdout) == (plain.returncode, plain.stdout), verb
        assert execs == [FRONT, shutil.which("runc", path=PATH)], (verb, execs)


def test_create_without_request_execs_the_runtime_directly(tmp_path):
    real, out = recorder(tmp_path)
    b = bundle(tmp_path, env=["FOO=bar"], annotations={"io.example/x": "y"})
    before = open(f"{b}/config.json", "rb").read()
    args = ["--root", "/run/x", "--log", str(tmp_path / "rlog"), "--log-format", "json", "create",
            "--bundle", b, "--pid-file", "/tmp/p", "cid1"]
    r, execs = traced(tmp_path, [FRONT, *args], {"PATH": PATH, "NVBIND_RUNTIME": real})
    assert r.returncode == 0
    assert execs == [FRONT, real], execs
    assert out.read_text().splitlines() == [real, *args]         # argv passed on unchanged
    assert open(f"{b}/config.json", "rb").read() == before


@pytest.mark.skipif(not IS_ROOT, reason="needs root (mknod for the simulated host)")
def test_create_with_request_runs_nvbind_then_the_runtime(tmp_path, sim_root):
    real, out = recorder(tmp_path)
    for form in ("--bundle", "-b", "--bundle="):
        b = bundle(tmp_path, env=["NVIDIA_VISIBLE_DEVICES=1"])
        args = ["--root", "/run/x", "create", *([form + b] if form.endswith("=") else [form, b]), "cid2"]
        env = {"PATH": PATH, "NVBIND_RUNTIME": real, "NVBIND_ROOT": sim_root, "NVBIND_LOG": "off"}
        r, execs = traced(tmp_path, [FRONT, *args], env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        # the tree's launcher starts Python in this same process: one exec of nvbind
        assert execs == [FRONT, NVBIND, real], execs
        cfg = json.load(open(f"{b}/config.json"))
        assert "/dev/nvidia1" in [d["path"] for d in cfg["linux"]["devices"]]
        assert out.read_text().splitlines() == [real, *args]


@pytest.mark.skipif(not IS_ROOT, reason="needs root (mknod for the simulated host)")
@pytest.mark.parametrize("raw", [
    # NVIDIA_VISIBLE_DEVICES with its N escaped: no trigger string in the bytes
    rb'{"process":{"env":["\u004eVIDIA_VISIBLE_DEVICES=1"]},"root":{"path":"rootfs"}}',
    # nvbind.io/gpus with its slash escaped
    rb'{"process":{"env":[]},"root":{"path":"rootfs"},"annotations":{"nvbind.io\/gpus":"1"}}',
])
def test_escapes_force_python_and_are_honoured(tmp_path, sim_root, raw):
    real, out = recorder(tmp_path)
    b = bundle(tmp_path, raw=raw)
    env = {"PATH": PATH, "NVBIND_RUNTIME": real, "NVBIND_ROOT": sim_root, "NVBIND_LOG": "off"}
    r, execs = traced(tmp_path, [FRONT, "create", "--bundle", b, "cid3"], env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert NVBIND in execs, execs
    cfg = json.load(open(f"{b}/config.json"))
    assert "/dev/nvidia1" in [d["path"] for d in cfg["linux"]["devices"]]   # the ask was real


@pytest.mark.parametrize("raw", [b'{"process":{"env":["A=\xff"]},"root":{"path":"rootfs"}}', None])
def test_unreadable_or_odd_configs_go_to_python(tmp_path, raw):
    """Non-UTF-8 bytes, or no config.json at all: nvbind decides (and reports), not C."""
    real, out = recorder(tmp_path)
    b = bundle(tmp_path, raw=raw if raw is not None else b"{}")
    if raw is None:
        os.unlink(f"{b}/config.json")
    env = {"PATH": PATH, "NVBIND_RUNTIME": real, "NVBIND_LOG": "off"}
    r, execs = traced(tmp_path, [FRONT, "create", "--bundle", b, "cid4"], env, capture_output=True, text=True)
    assert NVBIND in execs, execs
    assert r.returncode != 0 and "nvbind: error:" in r.stderr
    assert not out.exists()


def test_never_runs_itself(tmp_path):
    """NVBIND_RUNTIME naming the front end (through a link) or nvbind is skipped, as
    shim.real_runtime() skips it; with no runc on PATH nvbind reports the error (no loop)."""
    link = tmp_path / "nvbind-runtime"
    link.symlink_to(FRONT)
    empty = tmp_path / "empty"
    empty.mkdir()
    for target in (str(link), FRONT, NVBIND):
        r = subprocess.run([str(link), "state", "x"], env={"PATH": str(empty), "NVBIND_RUNTIME": target,
                                                           "NVBIND_LOG": "off"},
                           capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and "no real OCI runtime found" in r.stderr, r.stderr
    # found on PATH when NVBIND_RUNTIME is unusable
    real, out = recorder(tmp_path)
    os.rename(real, empty / "runc")
    r = subprocess.run([str(link), "state", "x"], env={"PATH": str(empty), "NVBIND_RUNTIME": str(link)},
                       timeout=30)
    assert r.returncode == 0 and out.read_text().splitlines() == [str(empty / "runc"), "state", "x"]


def test_install_links_the_front_end(tmp_path):
    onefile = os.path.join(REPO, "dist", "nvbind")
    if not os.path.exists(onefile):
        pytest.skip("dist/nvbind not built")
    dest = tmp_path / "prefix"
    dest.mkdir()
    r = subprocess.run([onefile, "install", "--engine", "docker", "--dest", str(dest)],
                       capture_output=True, text=True, env={})
    assert r.returncode == 0, r.stderr
    target = os.readlink(dest / "usr/local/bin/nvbind-runtime")
    assert target.startswith("/usr/local/lib/nvbind/nvbind-") and target.endswith("/nvbind-runtime")
    with open(str(dest) + target, "rb") as f:
        assert f.read(4) == b"\x7fELF"
    assert os.path.exists(os.path.join(os.path.dirname(str(dest) + target), "nvbind"))


@pytest.mark.skipif(not IS_ROOT, reason="needs root (runc)")
def test_container_life_through_the_front_end(live_env, tmp_path):
    """A real runc container asking for GPU 1, driven through nvbind-runtime as containerd
    drives a runtime: the GPU's node is there, libcuda loads (the links and ld cache made by
    the createContainer hook), and start/delete ran
    without Python."""
    import engines
    root, image = live_env
    bundle = engines.make_bundle(str(tmp_path / "b"), image, ["gpucheck", "/dev/nvidia1", "/dev/nvidia0"],
                                 ["NVIDIA_VISIBLE_DEVICES=1"])
    env = {"PATH": PATH, "NVBIND_ROOT": root, "NVBIND_LOG": str(tmp_path / "log")}
    state, cid = str(tmp_path / "state"), f"fe-{uuid.uuid4().hex[:8]}"
    out = open(tmp_path / "out", "w")
    try:
        r = subprocess.run([FRONT, "--root", state, "create", "--bundle", bundle, "--pid-file",
                            str(tmp_path / "pid"), cid], env=env, stdout=out, stderr=out,
                           stdin=subprocess.DEVNULL, timeout=60)
        assert r.returncode == 0, open(tmp_path / "out").read()
        cfg = json.load(open(f"{bundle}/config.json"))
        (hook,) = cfg["hooks"]["createContainer"]
        assert hook["path"] == os.path.join(TREE, "nvbind")
        r, execs = traced(tmp_path, [FRONT, "--root", state, "start", cid], env)
        assert r.returncode == 0 and NVBIND not in execs
        for _ in range(200):
            st = subprocess.run(["runc", "--root", state, "state", cid], capture_output=True, text=True)
            if '"stopped"' in st.stdout:
                break
            time.sleep(0.05)
    finally:
        r, execs = traced(tmp_path, [FRONT, "--root", state, "delete", "--force", cid], env)
        out.close()
    assert r.returncode == 0 and NVBIND not in execs
    text = open(tmp_path / "out").read()
    assert "open /dev/nvidia1: ENXIO" in text and "open /dev/nvidia0: ENOENT" in text, text
    assert "dlopen libcuda.so.1: OK" in text, text
    stages = [json.loads(line)["stage"] for line in open(tmp_path / "log")]
    assert stages == ["runtime create", "createContainer"], stages
