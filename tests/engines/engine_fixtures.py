"""Fixtures, imported by the test modules here (a nested conftest would shadow the top
one's module name): real dockerd, containerd and buildah for the engine tests: each daemon with its own data
root, state and sockets (tools/daemons.py), nvbind registered by `nvbind install --dest`
exactly as an administrator would, against a simulated 2-GPU host."""
from __future__ import annotations

import os
import subprocess

import pytest

from conftest import IS_ROOT, nvbind_cmd

IMAGE = "localhost/nvbind-gpucheck:latest"
PAUSE = "localhost/nvbind-pause:1"


def need(*tools):
    import daemons
    if not IS_ROOT:
        pytest.skip("real engines need root")
    missing = daemons.tool_missing(*tools)
    if missing:
        pytest.skip(f"{missing} not installed (make setup installs docker.io, containerd, buildah)")


def install(dest: str, engine: str, root: str, log: str) -> str:
    """`nvbind --root ROOT --log LOG install --engine ENGINE --dest DEST`; its output."""
    r = subprocess.run(nvbind_cmd() + ["--root", root, "--log", log, "install", "--engine", engine,
                                       "--dest", dest], capture_output=True, text=True, timeout=120,
                       env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert r.returncode == 0, r.stderr
    return r.stdout


def uninstall(dest: str) -> str:
    r = subprocess.run(nvbind_cmd() + ["uninstall", "--dest", dest], capture_output=True,
                       text=True, timeout=120, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="session")
def gpu_host(tmp_path_factory):
    """(simulated 2-GPU host root, test rootfs, docker-format archive of it, pause archive)."""
    need("gcc", "runc")
    import daemons
    import simhost
    import testimage
    base = tmp_path_factory.mktemp("engines")
    root = str(base / "host")
    simhost.build(root, gpus=2, mig=True, version="550.54.14", stale=True)
    rootfs = testimage.build(str(base / "image"))
    image = daemons.docker_archive(rootfs, IMAGE, str(base / "image.tar"))
    # the CRI sandbox ("pause") image: the same busybox rootfs, waiting to be stopped
    pause = daemons.docker_archive(rootfs, PAUSE, str(base / "pause.tar"),
                                   cmd=["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"])
    return root, rootfs, image, pause


@pytest.fixture(scope="session")
def docker_env(tmp_path_factory, gpu_host):
    """dockerd 20.10 with nvbind installed by `nvbind install --engine docker` into a node tree
    whose daemon.json already had settings of its own."""
    need("/usr/sbin/dockerd", "/usr/bin/docker", "/usr/bin/containerd", "unshare")
    import daemons
    root, _rootfs, image, _pause = gpu_host
    base = tmp_path_factory.mktemp("docker")
    dest = str(base / "node")
    os.makedirs(f"{dest}/etc/docker")
    with open(f"{dest}/etc/docker/daemon.json", "w") as f:
        f.write('{\n  "log-driver": "json-file",\n  "debug": false\n}\n')
    log = str(base / "nvbind.log")
    out = install(dest, "docker", root, log)
    d = daemons.Dockerd(f"{dest}/etc/docker/daemon.json", install_dest=dest,
                        env={"NVBIND_ROOT": root, "NVBIND_LOG": log,
                             "NVBIND_CACHE_DIR": str(base / "cache")})
    d.start()
    d.nvbind_log, d.node, d.install_out = log, dest, out
    try:
        d.load(image)
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="session")
def containerd_env(tmp_path_factory, gpu_host):
    """containerd 1.6 whose config.toml is Debian's (plus its own root, state, sockets and
    the CRI settings this VM needs), with nvbind merged in by `install --engine containerd`."""
    need("/usr/bin/containerd", "/usr/bin/ctr", "/usr/bin/containerd-shim-runc-v2", "unshare")
    import daemons
    root, _rootfs, image, pause = gpu_host
    base = tmp_path_factory.mktemp("containerd")
    dest = str(base / "node")
    d = daemons.short_dir("nvbc-")
    os.makedirs(f"{dest}/etc/containerd")
    config = f"{dest}/etc/containerd/config.toml"
    before = daemons.own_containerd_config(daemons.debian_containerd_config(), d, PAUSE)
    with open(config, "w") as f:
        f.write(before)
    log = str(base / "nvbind.log")
    out = install(dest, "containerd", root, log)
    c = daemons.Containerd(config, d, install_dest=dest,
                           env={"NVBIND_ROOT": root, "NVBIND_LOG": log,
                                "NVBIND_CACHE_DIR": str(base / "cache")})
    c.before, c.node, c.nvbind_log, c.install_out = before, dest, log, out
    c.start()
    try:
        for ns in ("default", "k8s.io"):
            for tar in (image, pause):
                r = c.ctr(["images", "import", tar], ns=ns)
                assert r.returncode == 0, r.stderr
        yield c
    finally:
        c.stop()


class Node:
    """Commands run as on a node where `nvbind install` wrote into DEST: a private mount
    namespace binds DEST's /etc/containers, /usr/share/containers and /usr/local over the
    host's, so podman and buildah read exactly the files install wrote, at their real paths,
    and the host is not changed."""

    BINDS = ("etc/containers", "usr/share/containers", "usr/local")

    def __init__(self, dest: str, state: str):
        self.dest, self.state = dest, state

    def run(self, argv: list[str], timeout: float = 180, cwd: str | None = None,
            env: dict | None = None) -> subprocess.CompletedProcess:
        binds = " && ".join(f"mount --bind {self.dest}/{b} /{b}" for b in self.BINDS)
        return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                               binds + ' && exec "$@"', "sh", *argv], capture_output=True,
                              text=True, timeout=timeout, cwd=cwd,
                              env={"PATH": "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                   "HOME": self.state, **(env or {})})

    def storage(self) -> list[str]:
        return ["--root", f"{self.state}/storage", "--runroot", f"{self.state}/run",
                "--storage-driver", "overlay"]

    def podman(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        # no --hooks-dir: podman reads containers.conf's hooks_dir, as on a real node
        return self.run(["podman", *self.storage(), "--tmpdir", f"{self.state}/tmp",
                         "--cgroup-manager", "cgroupfs",
                         "--events-backend", "file", "--runtime", "runc", *args], **kw)

    def buildah(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        # no --hooks-dir either: buildah's defaults are what a user gets
        return self.run(["buildah", *self.storage(), "--cgroup-manager", "cgroupfs", *args], **kw)


@pytest.fixture(scope="session")
def podman_node(tmp_path_factory, gpu_host):
    """A node with the host's containers configuration, `nvbind install --engine podman`."""
    need("podman", "buildah", "runc", "unshare")
    import shutil
    root, rootfs, _image, _pause = gpu_host
    base = tmp_path_factory.mktemp("podman-node")
    dest = str(base / "node")
    for d in ("etc/containers", "usr/share/containers"):
        shutil.copytree(f"/{d}", f"{dest}/{d}", symlinks=True)
    os.makedirs(f"{dest}/usr/local")
    before = {d: sorted(os.listdir(f"{dest}/{d}")) for d in ("etc/containers", "usr/share/containers")}
    log = str(base / "nvbind.log")
    out = install(dest, "podman", root, log)
    import daemons
    node = Node(dest, daemons.short_dir("nvbp-"))   # podman: runroot at most 50 characters
    node.nvbind_log, node.install_out, node.before = log, out, before
    imp = subprocess.run(["sh", "-c", f"tar -C {rootfs} -c . | podman --root {node.state}/storage "
                          f"--runroot {node.state}/run --tmpdir {node.state}/tmp --storage-driver overlay "
                          f"import -q - {IMAGE}"],
                         capture_output=True, text=True, timeout=300)
    assert imp.returncode == 0, imp.stderr
    yield node
    node.podman(["rm", "-af"], timeout=120)
    node.buildah(["rm", "--all"], timeout=120)
    # its own --tmpdir: a reset must not remove the /run/libpod other podman users share
    subprocess.run(["podman", *node.storage(), "--tmpdir", f"{node.state}/tmp", "system", "reset",
                    "--force"], capture_output=True,
                   timeout=300)
    daemons._rmtree(node.state)
