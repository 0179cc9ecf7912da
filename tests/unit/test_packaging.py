"""Packaging files parse and name only things this repo has."""
import json
import os
import re

from conftest import REPO, run_nvbind

K8S = os.path.join(REPO, "packaging", "kubernetes")


def load(name):
    with open(os.path.join(K8S, name)) as f:
        return json.load(f)


def test_kubernetes_manifests():
    rc, ds = load("runtimeclass.json"), load("daemonset.json")
    assert rc["kind"] == "RuntimeClass" and rc["handler"] == "nvbind"
    # the handler is the runtime name nvbind install writes for containerd
    from nvbind.admin import install
    assert 'runtimes.nvbind]' in install.CONTAINERD_DROPIN
    spec = ds["spec"]["template"]["spec"]
    with open(os.path.join(K8S, "Containerfile")) as f:
        containerfile = f.read()
    tag = re.search(r"-t (\S+) \.", containerfile).group(1)
    assert "COPY dist/nvbind" in containerfile
    for c in spec["initContainers"] + spec["containers"]:
        assert c["image"] == tag
        args = c["args"]
        # every verb the manifests use is one nvbind has
        verb = args[args.index("--root") + 2] if "--root" in args else args[0]
        assert verb in ("install", "cdi", "device-plugin")
        if verb == "device-plugin":       # the build with grpc (packaging/nvbind.spec)
            assert c["command"] == ["/usr/local/bin/nvbind-k8s"]
            assert "COPY dist/nvbind-k8s /usr/local/bin/nvbind-k8s" in containerfile
    mounts = {m["name"] for c in spec["initContainers"] + spec["containers"] for m in c["volumeMounts"]}
    assert mounts <= {v["name"] for v in spec["volumes"]}
    assert ds["spec"]["selector"]["matchLabels"] == ds["spec"]["template"]["metadata"]["labels"]


def test_engine_snippets():
    with open(os.path.join(REPO, "packaging/docker/daemon.json")) as f:
        assert json.load(f)["runtimes"]["nvbind"]["path"] == "/usr/local/bin/nvbind-runtime"
    with open(os.path.join(REPO, "packaging/containerd/nvbind.toml")) as f:
        assert 'BinaryName = "/usr/local/bin/nvbind-runtime"' in f.read()


def _snapshot(d):
    out = {}
    for base, dirs, files in os.walk(d):
        for n in dirs + files:
            p = os.path.join(base, n)
            out[p] = os.readlink(p) if os.path.islink(p) else (None if os.path.isdir(p) else open(p, "rb").read())
    return out


def test_install_uninstall_round_trip(tmp_path):
    dest = tmp_path / "prefix"
    (dest / "etc/docker").mkdir(parents=True)
    (dest / "etc/docker/daemon.json").write_text('{"debug": true, "runtimes": {"x": {"path": "/x"}}}\n')
    (dest / "usr/share/containers/oci/hooks.d").mkdir(parents=True)
    (dest / "usr/share/containers/oci/hooks.d/50-nvbind-precreate.json").write_text("user's own\n")
    before = _snapshot(dest)
    r = run_nvbind(["install", "--engine", "podman,crio,docker,containerd", "--dest", str(dest)])
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "backed up" in out and "50-nvbind-precreate.json" in out
    daemon = json.loads((dest / "etc/docker/daemon.json").read_text())
    assert daemon["debug"] is True and daemon["runtimes"]["x"] == {"path": "/x"}
    assert daemon["runtimes"]["nvbind"] == {"path": "/usr/local/bin/nvbind-runtime"}
    hook = json.loads((dest / "usr/share/containers/oci/hooks.d/50-nvbind-precreate.json").read_text())
    assert hook["hook"]["path"] == "/usr/local/bin/nvbind" and hook["hook"]["env"]
    assert (dest / "usr/share/containers/oci/hooks.d/50-nvbind-oci.json").exists()
    stop = json.loads((dest / "usr/share/containers/oci/hooks.d/50-nvbind-poststop.json").read_text())
    assert stop["stages"] == ["poststop"] and stop["hook"]["args"][1:] == ["hook", "poststop"]
    assert (dest / "etc/containerd/conf.d/99-nvbind.toml").exists()
    # installing again changes nothing
    again = run_nvbind(["install", "--engine", "podman,crio,docker,containerd", "--dest", str(dest)])
    assert again.stdout.decode().strip() == "nothing to change"
    r = run_nvbind(["uninstall", "--dest", str(dest)])
    assert r.returncode == 0, r.stderr
    assert _snapshot(dest) == before


def test_install_refuses_unknown_engine(tmp_path):
    r = run_nvbind(["install", "--engine", "lxc", "--dest", str(tmp_path)])
    assert r.returncode == 2 and b"unknown engine 'lxc'" in r.stderr
    assert os.listdir(tmp_path) == []
