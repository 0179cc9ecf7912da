"""Issue 12, item 5: the Kubernetes DaemonSet's cdi-refresh container, run by podman as the
kubelet would run it (its command, env and hostPath volume read from
packaging/kubernetes/daemonset.json), against a node root: Debian's real NVIDIA packages.

The image is what packaging/kubernetes/Containerfile builds (Debian 12 + dist/nvbind at
/usr/local/bin/nvbind): here debootstrap bookworm with dist/nvbind bind-mounted there.
The spec must land in the node's /run/cdi (the node's /var/run is a link to /run, which the
container must not follow into its own /run) and carry no /host prefix.
"""
import json
import os

import pytest

from realenv import REPO, debian_host, real, real_state  # noqa: F401 (fixtures)

DIST = os.path.join(REPO, "dist", "nvbind")


def _container(name):
    with open(os.path.join(REPO, "packaging", "kubernetes", "daemonset.json")) as f:
        ds = json.load(f)
    spec = ds["spec"]["template"]["spec"]
    c = next(c for c in spec["containers"] if c["name"] == name)
    vols = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"]}
    return c, vols


def test_daemonset_cdi_refresh_under_podman(debian_host):
    if not os.path.exists(DIST):
        pytest.skip("dist/nvbind not built (make dist; `make test` builds it first)")
    h = debian_host
    c, vols = _container("cdi-refresh")
    args = list(c["args"])
    if "--watch" in args:                         # one round, not a daemon
        i = args.index("--watch")
        del args[i:i + 2]
    out = args[args.index("--output") + 1]
    assert out.startswith("/host/var/run/")
    mounts = []
    for m in c["volumeMounts"]:
        assert vols[m["name"]] == "/"             # the node's /: here the real-package root
        mounts += ["--volume", f"{h.root}:{m['mountPath']}"]
    env = {e["name"]: e["value"] for e in c.get("env", [])}
    node_spec = h.root + "/run/cdi/" + os.path.basename(out)
    if os.path.exists(node_spec):
        os.unlink(node_spec)
    try:
        r = h.pm.run(["/usr/local/bin/nvbind", *args],
                     env=env, image="localhost/nvbind-bookworm:latest",
                     extra=mounts + ["--volume", f"{DIST}:/usr/local/bin/nvbind:ro"])
        assert r.returncode == 0, r.stdout + r.stderr
        assert os.path.exists(node_spec), "the spec did not reach the node's /run/cdi"
        with open(node_spec) as f:
            text = f.read()
        assert "/host" not in text, [ln for ln in text.splitlines() if "/host" in ln][:5]
        spec = json.loads(text)
        for e in [spec["containerEdits"]] + [d["containerEdits"] for d in spec["devices"]]:
            for m in e.get("mounts", []):
                assert os.path.lexists(h.root + m["hostPath"]), m
            for hk in e.get("hooks", []):
                assert hk["path"] == "/usr/local/bin/nvbind" and "--root" not in hk["args"], hk
    finally:
        if os.path.exists(node_spec):
            os.unlink(node_spec)
