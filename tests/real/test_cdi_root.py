"""Issue 12, item 5: a CDI spec generated with --root is for the host that root is.

The Kubernetes DaemonSet runs `nvbind --root /host cdi generate --output
/host/var/run/cdi/...` with the node's / mounted at /host. Nothing in the spec may carry
the /host prefix (podman on the node would stat /host/run/... and fail), no hook may be
told `--root /host`, and the output path is resolved inside the root: on Debian
/var/run is a symlink to /run, which inside the DaemonSet's container would lead to the
container's own /run, never the node's.
"""
import json
import os

from realenv import debian_host, host, nvbind, real, real_state  # noqa: F401 (fixtures)

OUT_NAME = "nvbind-realhost-test.json"


def _strings(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, str):
        yield obj


def test_spec_never_carries_the_root_prefix(host, tmp_path):
    # as the DaemonSet runs it: its log under the root too (NVBIND_LOG=/host/var/log/...)
    r = nvbind(["--root", host.root, "cdi", "generate", "--capabilities", "all"],
               env={"NVBIND_LOG": host.root + "/var/log/nvbind-realhost-test.log"})
    assert r.returncode == 0, r.stderr
    spec = json.loads(r.stdout)
    leaks = sorted({s for s in _strings(spec) if host.root in s})
    assert not leaks, f"root prefix in the spec: {leaks[:8]}"
    edits = [spec["containerEdits"]] + [d["containerEdits"] for d in spec["devices"]]
    for e in edits:
        for h in e.get("hooks", []):
            assert "--root" not in h["args"], h
        for m in e.get("mounts", []):
            assert os.path.lexists(host.root + m["hostPath"]), m      # there on the node
        for n in e.get("deviceNodes", []):
            assert os.path.lexists(host.root + n.get("hostPath", n["path"])), n
    f = tmp_path / "spec.json"
    f.write_text(r.stdout)
    v = nvbind(["cdi", "validate", str(f)])
    assert v.returncode == 0, v.stdout + v.stderr


def test_daemonset_output_through_var_run_symlink_stays_in_the_root(debian_host):
    root = debian_host.root
    assert os.readlink(root + "/var/run") == "/run"      # Debian's own link
    inside = f"{root}/run/cdi/{OUT_NAME}"
    outside = f"/run/cdi/{OUT_NAME}"
    for p in (inside, outside):
        if os.path.exists(p):
            os.unlink(p)
    try:
        r = nvbind(["--root", root, "cdi", "generate", "--output", f"{root}/var/run/cdi/{OUT_NAME}"])
        assert r.returncode == 0, r.stderr
        assert not os.path.exists(outside), "the spec went to this machine's /run, not the root's"
        assert os.path.exists(inside), r.stderr
        with open(inside) as f:
            spec = json.load(f)
        assert not [s for s in _strings(spec) if root in s]
    finally:
        for p in (inside, outside):
            if os.path.exists(p):
                os.unlink(p)


def test_output_into_a_missing_directory(debian_host, tmp_path):
    out = tmp_path / "not" / "yet" / "nvidia.json"
    r = nvbind(["--root", debian_host.root, "cdi", "generate", "--output", str(out)])
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["kind"] == "nvidia.com/gpu"
