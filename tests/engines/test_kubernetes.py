"""The DaemonSet's containers run under podman as the kubelet would run them: the
installer image from packaging/kubernetes/Containerfile, privileged, the node's / mounted
at /host (hostPath), the manifest's args and env; the init container to completion, then
the long-running cdi-refresh container, which must stay up and write the node's spec."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest
from engine_fixtures import gpu_host, need  # noqa: F401 - fixtures

from conftest import REPO

pytestmark = pytest.mark.e2e
ONEFILE = os.path.join(REPO, "dist", "nvbind")
K8S = os.path.join(REPO, "packaging", "kubernetes")
BASE = "localhost/nvbind-slim-standin:12"
SLIM_LIBS = [f"/lib/x86_64-linux-gnu/{n}" for n in (
    "libdl.so.2", "libpthread.so.0", "libm.so.6", "libz.so.1", "libgcc_s.so.1", "libuuid.so.1",
    "libffi.so.8", "librt.so.1", "libutil.so.1")]


@pytest.fixture(scope="module")
def kube_node(gpu_host, tmp_path_factory):
    need("podman", "runc")
    if not os.path.exists(ONEFILE):
        pytest.skip("dist/nvbind not built (make test builds it with `make dist`)")
    import daemons
    import simhost
    base = tmp_path_factory.mktemp("kube")
    node = str(base / "node")
    simhost.build(node, gpus=2, mig=True, version="550.54.14", stale=True)
    # what a Debian node has where the DaemonSet writes
    os.makedirs(f"{node}/etc/containerd", exist_ok=True)
    with open(f"{node}/etc/containerd/config.toml", "w") as f:
        f.write(daemons.debian_containerd_config())
    os.makedirs(f"{node}/run", exist_ok=True)
    os.makedirs(f"{node}/var/log", exist_ok=True)
    if os.path.isdir(f"{node}/var/run") and not os.path.islink(f"{node}/var/run"):
        shutil.rmtree(f"{node}/var/run")
    if not os.path.lexists(f"{node}/var/run"):
        os.symlink("/run", f"{node}/var/run")          # as on Debian: absolute
    state = daemons.short_dir("nvbk-")
    pm = ["podman", "--root", f"{state}/storage", "--runroot", f"{state}/run", "--tmpdir",
          f"{state}/tmp", "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs",
          "--events-backend", "file", "--runtime", "runc"]
    # no registry: a stand-in for debian:12-slim, the test rootfs plus the glibc, zlib,
    # libgcc and libuuid libraries every Debian base image has (the frozen program's needs)
    base_fs = str(base / "slim")
    shutil.copytree(gpu_host[1], base_fs, symlinks=True)
    for lib in SLIM_LIBS:
        if os.path.exists(lib):
            shutil.copy2(os.path.realpath(lib), base_fs + lib)
    imp = subprocess.run(["sh", "-c", f"tar -C {base_fs} -c . | {' '.join(pm)} import -q - {BASE}"],
                         capture_output=True, text=True, timeout=300)
    assert imp.returncode == 0, imp.stderr
    ds = json.load(open(os.path.join(K8S, "daemonset.json")))
    tag = ds["spec"]["template"]["spec"]["containers"][0]["image"]
    # no registry: the Containerfile's FROM is replaced by the local glibc test image
    ctx = str(base / "ctx")
    os.makedirs(f"{ctx}/dist")
    shutil.copy2(ONEFILE, f"{ctx}/dist/nvbind")
    shutil.copy2(os.path.join(os.path.dirname(ONEFILE), "nvbind-k8s"), f"{ctx}/dist/nvbind-k8s")
    b = subprocess.run(pm + ["build", "--from", BASE, "--network", "none", "-f",
                             os.path.join(K8S, "Containerfile"), "-t", tag, ctx],
                       capture_output=True, text=True, timeout=600)
    assert b.returncode == 0, b.stdout + b.stderr
    yield node, pm, ds
    subprocess.run(pm + ["rm", "-af"], capture_output=True, timeout=120)
    subprocess.run(pm + ["system", "reset", "--force"], capture_output=True, timeout=300)
    daemons._rmtree(state)


def _podman_args(c: dict, volumes: dict, node: str) -> list[str]:
    """A pod spec container as podman run options (what the kubelet asks its runtime for)."""
    out = ["--network", "none", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"]
    if (c.get("securityContext") or {}).get("privileged"):
        out.append("--privileged")
    for m in c.get("volumeMounts", []):
        assert volumes[m["name"]]["hostPath"]["path"] == "/"
        out += ["-v", f"{node}:{m['mountPath']}"]
    for e in c.get("env", []):
        out += ["-e", f"{e['name']}={e['value']}"]
    return out + [c["image"]] + list(c.get("args", []))


def test_daemonset_containers_under_podman(kube_node):
    node, pm, ds = kube_node
    spec = ds["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    for c in spec["initContainers"]:
        r = subprocess.run(pm + ["run", "--rm", *_podman_args(c, volumes, node)],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"{c['name']}: {r.stdout}{r.stderr}"
    # the init container installed nvbind on the node: containerd's config has the runtime
    text = open(f"{node}/etc/containerd/config.toml").read()
    assert "runtimes.nvbind.options]" in text
    assert os.path.islink(f"{node}/usr/local/bin/nvbind")
    c = next(c for c in spec["containers"] if c["name"] == "cdi-refresh")
    r = subprocess.run(pm + ["run", "-d", "--name", "cdi-refresh", *_podman_args(c, volumes, node)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = f"{node}/run/cdi/nvidia.json"
    for _ in range(300):
        if os.path.exists(out):
            break
        time.sleep(0.2)
    state = subprocess.run(pm + ["inspect", "--format", "{{.State.Running}}", "cdi-refresh"],
                           capture_output=True, text=True, timeout=60).stdout.strip()
    logs = subprocess.run(pm + ["logs", "cdi-refresh"], capture_output=True, text=True, timeout=60)
    assert os.path.exists(out), logs.stdout + logs.stderr
    assert state == "true", logs.stdout + logs.stderr       # --watch keeps it running
    subprocess.run(pm + ["rm", "-f", "-t", "1", "cdi-refresh"], capture_output=True, timeout=120)
    # the spec is for the node: every path as the node sees it, and there
    cdi = json.load(open(out))
    assert "/host" not in json.dumps(cdi)
    edits = [cdi["containerEdits"]] + [d["containerEdits"] for d in cdi["devices"]]
    for e in edits:
        for n in e.get("deviceNodes", []):
            assert os.path.exists(node + n.get("hostPath", n["path"])), n
        for m in e.get("mounts", []):
            assert os.path.exists(node + m["hostPath"]), m
        for h in e.get("hooks", []):
            # nvbind as installed on the node (an absolute link, resolved in the node)
            path = node + h["path"]
            if os.path.islink(path):
                path = node + os.readlink(path)
            assert os.access(path, os.X_OK), h
    r = subprocess.run([ONEFILE, "cdi", "validate", out], capture_output=True, text=True,
                       timeout=120, env={"NVBIND_LOG": "off"})
    assert r.returncode == 0, r.stdout + r.stderr
