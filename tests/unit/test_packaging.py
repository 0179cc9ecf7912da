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
    from nvbind.admin import containerd_config
    merged = containerd_config.merge(None, "/usr/local/bin/nvbind-runtime", "config.toml")
    assert 'containerd.runtimes.nvbind]' in merged
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
    (dest / "usr/share/containers/oci/hooks.d/50-nvbind-oci.json").write_text("user's own\n")
    (dest / "etc/containerd").mkdir(parents=True)
    # Debian 12's containerd config: version 2, no runtimes, imports nothing
    debian = ('version = 2\n\n[plugins]\n  [plugins."io.containerd.grpc.v1.cri"]\n'
              '    [plugins."io.containerd.grpc.v1.cri".cni]\n      bin_dir = "/usr/lib/cni"\n'
              '      conf_dir = "/etc/cni/net.d"\n  [plugins."io.containerd.internal.v1.opt"]\n'
              '    path = "/var/lib/containerd/opt"\n')
    (dest / "etc/containerd/config.toml").write_text(debian)
    before = _snapshot(dest)
    r = run_nvbind(["install", "--engine", "podman,crio,docker,containerd", "--dest", str(dest)])
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "backed up" in out and "50-nvbind-oci.json" in out
    daemon = json.loads((dest / "etc/docker/daemon.json").read_text())
    assert daemon["debug"] is True and daemon["runtimes"]["x"] == {"path": "/x"}
    assert daemon["runtimes"]["nvbind"] == {"path": "/usr/local/bin/nvbind-runtime"}
    assert os.access(dest / "usr/local/bin/nvidia-container-runtime-hook", os.X_OK)
    # precreate only where podman alone reads it; buildah's directories get OCI stages only
    hook = json.loads((dest / "usr/local/lib/nvbind/hooks.d/50-nvbind-precreate.json").read_text())
    assert hook["hook"]["path"] == "/usr/local/bin/nvbind" and hook["hook"]["env"]
    conf = (dest / "etc/containers/containers.conf.d/50-nvbind.conf").read_text()
    import tomllib
    assert tomllib.loads(conf)["engine"]["hooks_dir"] == [
        "/usr/share/containers/oci/hooks.d", "/usr/local/lib/nvbind/hooks.d"]
    for d in ("usr/share/containers/oci/hooks.d", "etc/containers/oci/hooks.d"):
        for f in [f for f in os.listdir(dest / d) if f.endswith(".json")]:
            assert json.loads((dest / d / f).read_text())["stages"] != ["precreate"], f
    assert (dest / "usr/share/containers/oci/hooks.d/50-nvbind-oci.json").exists()
    stop = json.loads((dest / "usr/share/containers/oci/hooks.d/50-nvbind-poststop.json").read_text())
    assert stop["stages"] == ["poststop"] and stop["hook"]["args"][1:] == ["hook", "poststop"]
    merged = (dest / "etc/containerd/config.toml").read_text()
    assert merged.startswith(debian) and "runtimes.nvbind.options]" in merged
    assert (dest / "etc/containerd/config.toml.nvbind-backup").read_text() == debian
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


def test_install_writes_root_and_log_into_hook_env(tmp_path):
    r = run_nvbind(["--root", "/sim", "--log", "/tmp/x.log", "install", "--engine", "podman",
                    "--dest", str(tmp_path)])
    assert r.returncode == 0, r.stderr
    hook = json.loads((tmp_path / "usr/local/lib/nvbind/hooks.d/50-nvbind-precreate.json").read_text())
    assert hook["hook"]["env"] == ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "NVBIND_LOG=/tmp/x.log",
                                   "NVBIND_ROOT=/sim"]


def test_containerd_merge_keeps_runc_options_and_refuses_foreign_nvbind():
    from nvbind.admin import containerd_config as cc
    from nvbind.errors import NvbindError
    text = ('version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n'
            '  runtime_type = "io.containerd.runc.v2"\n'
            '  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n'
            '    SystemdCgroup = true\n')
    new = cc.merge(text, "/usr/local/bin/nvbind-runtime", "c.toml")
    import tomllib
    rts = tomllib.loads(new)["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]
    assert rts["nvbind"]["options"] == {"SystemdCgroup": True,
                                        "BinaryName": "/usr/local/bin/nvbind-runtime"}
    assert new.count(".runtimes.runc]") == 1          # runc already there: not added again
    assert cc.merge(new, "/usr/local/bin/nvbind-runtime", "c.toml") is None
    foreign = text + '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvbind]\n'
    try:
        cc.merge(foreign, "/usr/local/bin/nvbind-runtime", "c.toml")
        raise AssertionError("merged over a foreign runtime")
    except NvbindError as e:
        assert "already defines a runtime named nvbind" in str(e)
    # an inline table cannot be extended with a header: refused, nothing written
    inline = 'version = 2\n[plugins]\n"io.containerd.grpc.v1.cri" = {containerd = {snapshotter = "x"}}\n'
    try:
        cc.merge(inline, "/usr/local/bin/nvbind-runtime", "c.toml")
        raise AssertionError("merged into an inline table")
    except NvbindError as e:
        assert "by hand" in str(e)


def test_doctor_flags_precreate_where_buildah_reads_it(tmp_path):
    from nvbind.admin import doctor
    d = tmp_path / "usr/share/containers/oci/hooks.d"
    d.mkdir(parents=True)
    (d / "50-nvbind-precreate.json").write_text(json.dumps({
        "version": "1.0.0", "hook": {"path": "/usr/local/bin/nvbind", "args": ["nvbind", "hook", "precreate"],
                                     "env": ["PATH=/usr/bin"]}, "when": {"always": True},
        "stages": ["precreate"]}))
    podman = [c for c in doctor._engines(str(tmp_path), str(tmp_path)) if c["check"] == "podman"][0]
    assert podman["status"] == doctor.FAIL and "buildah" in podman["detail"]
    (d / "50-nvbind-precreate.json").unlink()
    r = run_nvbind(["install", "--engine", "podman", "--dest", str(tmp_path)])
    assert r.returncode == 0, r.stderr
    podman = [c for c in doctor._engines(str(tmp_path), str(tmp_path)) if c["check"] == "podman"][0]
    assert podman["status"] != doctor.FAIL, podman


def test_reinstall_moves_precreate_out_of_buildahs_way(tmp_path):
    """An install by an earlier nvbind left precreate in /usr/share/containers/oci/hooks.d."""
    r = run_nvbind(["install", "--engine", "podman", "--dest", str(tmp_path)])
    assert r.returncode == 0, r.stderr
    manifest = tmp_path / "usr/local/lib/nvbind/manifest.json"
    m = json.loads(manifest.read_text())
    old = "/usr/share/containers/oci/hooks.d/50-nvbind-precreate.json"
    (tmp_path / old.lstrip("/")).parent.mkdir(parents=True)
    (tmp_path / old.lstrip("/")).write_text("{}\n")
    m["files"].append(old)
    manifest.write_text(json.dumps(m))
    r = run_nvbind(["install", "--engine", "podman", "--dest", str(tmp_path)])
    assert r.returncode == 0 and b"buildah rejects precreate" in r.stdout, r.stderr
    assert not (tmp_path / old.lstrip("/")).exists()
    assert old not in json.loads(manifest.read_text())["files"]
