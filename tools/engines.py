"""Helpers shared by the demo and the end-to-end tests: podman wired to nvbind."""
from __future__ import annotations

import json
import os
import subprocess
import uuid
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import simhost  # noqa: E402
import testimage  # noqa: E402

IMAGE = "localhost/nvbind-gpucheck:latest"
HOOK_PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"


def nvbind_exe() -> str:
    """The nvbind executable next to the running interpreter (the project's virtualenv)."""
    exe = os.path.join(os.path.dirname(sys.executable), "nvbind")
    if not os.path.exists(exe):
        raise SystemExit(f"{exe} missing: run `make setup` first")
    return exe


def write_hooks_dir(hooks_dir: str, exe: str, root: str, log: str) -> str:
    """A hooks.d directory registering nvbind as podman's precreate hook (1.0.0 format)."""
    os.makedirs(hooks_dir, exist_ok=True)
    path = os.path.join(hooks_dir, "50-nvbind-precreate.json")
    with open(path, "w") as f:
        json.dump({
            "version": "1.0.0",
            "hook": {"path": exe, "args": ["nvbind", "--root", root, "hook", "precreate"],
                     "env": [HOOK_PATH, f"NVBIND_LOG={log}"], "timeout": 10},
            "when": {"always": True},
            "stages": ["precreate"],
        }, f, indent=2)
    return path


def import_tar(podman: list[str], rootfs: str, image: str, timeout=300,
               cwd: str | None = None) -> subprocess.CompletedProcess:
    """`tar -C rootfs -c . | podman import - image`. podman alone holds the pipe's read end,
    so that tar gets EPIPE if podman stops early instead of blocking on a pipe nobody
    reads (which once hung a CI run); tar is bounded too."""
    tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
    try:
        return subprocess.run(podman + ["import", "-q", "-", image], stdin=tar.stdout,
                              capture_output=True, text=True, timeout=timeout, cwd=cwd)
    finally:
        tar.stdout.close()
        try:
            tar.wait(timeout=60)
        except subprocess.TimeoutExpired:
            tar.kill()
            tar.wait()


class Podman:
    """podman with the flags this VM needs, and storage in a directory of our own."""

    def __init__(self, state: str, hooks_dir: str | None = None):
        self.state = os.path.abspath(state)
        self.hooks_dir = hooks_dir
        self.log: str | None = None

    def base(self) -> list[str]:
        cmd = ["podman", "--root", f"{self.state}/storage", "--runroot", f"{self.state}/run",
               "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs",
               "--events-backend", "file", "--runtime", "runc"]
        if self.hooks_dir:
            cmd += ["--hooks-dir", self.hooks_dir]
        return cmd

    def has_image(self, image=IMAGE) -> bool:
        return subprocess.run(self.base() + ["image", "exists", image]).returncode == 0

    def import_rootfs(self, rootfs: str, image=IMAGE) -> None:
        r = import_tar(self.base(), rootfs, image)
        if r.returncode:
            raise RuntimeError(f"podman import failed ({r.returncode}): {r.stderr}")

    def run(self, args: list[str], env: dict[str, str] | None = None,
            image=IMAGE, extra: list[str] | None = None, timeout=120):
        # Not --rm: podman 4.3's run --rm races its own cleanup under load ("getting exit
        # code of container …: no such exit code", exit 127, whatever the container did).
        name = f"nvbt-{uuid.uuid4().hex[:12]}"
        cmd = self.base() + ["run", "--name", name, "--network", "none",
                             "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"]
        for k, v in (env or {}).items():
            cmd += ["--env", f"{k}={v}"]
        cmd += (extra or []) + [image] + args
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        finally:
            subprocess.run(self.base() + ["rm", "-f", "-t", "0", name], capture_output=True,
                           timeout=120)


def prepare(state: str, gpus: int = 2, exe: str | None = None,
            root: str | None = None, rootfs: str | None = None) -> tuple[str, Podman]:
    """Simulated host + image + hooks dir under `state`; returns (host root, podman)."""
    state = os.path.abspath(state)
    root = root or f"{state}/host"
    if not os.path.exists(f"{root}/proc/driver/nvidia/version"):
        simhost.build(root, gpus=gpus, mig=True, version="550.54.14", stale=True)
    hooks = write_hooks_dir(f"{state}/hooks.d", exe or nvbind_exe(), root, f"{state}/nvbind.log")
    pm = Podman(state, os.path.dirname(hooks))
    pm.log = f"{state}/nvbind.log"
    if not pm.has_image():
        pm.import_rootfs(rootfs or testimage.build(f"{state}/image-rootfs"))
    return root, pm


# ---- runc / crun driven directly with a bundle -------------------------------------------
RUNTIMES = {
    # name: argv prefix that runs `<runtime> run ID` in the bundle
    "runc": lambda cid: ["runc", "run", cid],
    # crun fails on this VM's hybrid cgroup layout unless the unified mount is hidden
    "crun": lambda cid: ["unshare", "-m", "sh", "-c",
                         f"umount /sys/fs/cgroup/unified && exec crun run {cid}"],
    # cgroup v2: a private mount namespace with cgroup2 on /sys/fs/cgroup
    "runc-v2": lambda cid: ["unshare", "-m", "sh", "-c",
                            f"mount -t cgroup2 none /sys/fs/cgroup && exec runc run {cid}"],
}


def make_bundle(bundle: str, rootfs_src: str, args: list[str], env: list[str] = (),
                hooks: dict | None = None, mounts: list[dict] = ()) -> str:
    """A bundle like `runc spec` makes, with a private copy of rootfs_src."""
    bundle = os.path.abspath(bundle)
    os.makedirs(bundle, exist_ok=True)
    subprocess.run(["cp", "-a", rootfs_src, f"{bundle}/rootfs"], check=True)
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    with open(f"{bundle}/config.json") as f:
        cfg = json.load(f)
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = list(args)
    cfg["process"]["env"] += list(env)
    cfg["root"]["readonly"] = False
    cfg["mounts"] += list(mounts)
    if hooks:
        cfg["hooks"] = hooks
    with open(f"{bundle}/config.json", "w") as f:
        json.dump(cfg, f, indent=1)
    return bundle


def nvbind_hook(stage: str, root: str, log: str, extra_env: list[str] = (),
                exe: str | None = None) -> dict:
    return {"path": exe or nvbind_exe(),
            "args": ["nvbind", "--root", root, "--log", log, "hook", stage],
            "env": [HOOK_PATH, *extra_env], "timeout": 30}


def run_bundle(bundle: str, cid: str, runtime: str = "runc", timeout=120):
    r = subprocess.run(RUNTIMES[runtime](cid), cwd=bundle, capture_output=True, text=True,
                       timeout=timeout)
    subprocess.run(["runc", "delete", "-f", cid], capture_output=True)
    return r
