"""Real-package hosts (tools/realhost.py) and real podman containers started through
nvbind's precreate hook (hooks.d, `nvbind --root <host root> hook precreate`).

Two host layouts, each test run on both: "debian" (Debian 12's NVIDIA 535 packages installed
by apt in a debootstrap root: alternatives, nvidia/current directories) and "runfile"
(NVIDIA's .run installer layout, flat library directories, made from the same files).
Two images: "plain" (debootstrap minbase bookworm) and "glvnd" (with the glvnd, Vulkan and
OpenCL loaders). A dlopen checker built on this host is bind-mounted at /usr/local/bin.

Fixtures and helpers; the test modules import the fixtures from here (a second
conftest.py would shadow tests/conftest.py, which other tests import as `conftest`).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGES = {"plain": "localhost/nvbind-bookworm:latest", "glvnd": "localhost/nvbind-bookworm-glvnd:latest"}
HOOK_PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
IS_ROOT = os.geteuid() == 0


class Host:
    """One host layout wired to podman through its own hooks.d and inventory cache."""

    def __init__(self, name: str, root: str, state: str, real: dict):
        import engines
        self.name, self.root, self.real = name, root, real
        self.version = real["version"]
        self.state = state
        self.cache_dir = f"{state}/cache-{name}"
        self.log = f"{state}/nvbind-{name}.log"
        hooks = f"{state}/hooks-{name}"
        os.makedirs(hooks, exist_ok=True)
        with open(f"{hooks}/50-nvbind-precreate.json", "w") as f:
            json.dump({"version": "1.0.0",
                       "hook": {"path": engines.nvbind_exe(),
                                "args": ["nvbind", "--root", root, "hook", "precreate"],
                                "env": [HOOK_PATH, f"NVBIND_LOG={self.log}",
                                        f"NVBIND_CACHE_DIR={self.cache_dir}"],
                                "timeout": 20},
                       "when": {"always": True}, "stages": ["precreate"]}, f)
        self.pm = engines.Podman(state, hooks)

    def run(self, script: str, caps: str | None = "utility", devices: str | None = "0",
            image: str = "plain", extra=(), env=None, timeout=120):
        e = dict(env or {})
        if devices is not None:
            e["NVIDIA_VISIBLE_DEVICES"] = devices
        if caps is not None:
            e["NVIDIA_DRIVER_CAPABILITIES"] = caps
        vols = ["--volume", f"{self.real['dlcheck']}:/usr/local/bin/dlcheck:ro",
                "--volume", f"{self.real['debs']}:/debs:ro"]
        return self.pm.run(["/bin/sh", "-c", script], env=e, image=IMAGES[image],
                           extra=vols + list(extra), timeout=timeout)

    def mounted(self, caps: str, image: str = "plain", devices: str = "0") -> list[str]:
        """Container paths nvbind bind-mounted (read from the container's mount table)."""
        r = self.run("cat /proc/self/mountinfo", caps=caps, image=image, devices=devices)
        assert r.returncode == 0, r.stdout + r.stderr
        out = []
        for line in r.stdout.splitlines():
            f = line.split()
            target = f[4].replace("\\040", " ")
            if target.startswith(("/proc", "/sys", "/dev/", "/etc/hosts", "/etc/hostname",
                                  "/etc/resolv.conf", "/run/.containerenv", "/usr/local/bin/dlcheck",
                                  "/debs")) or target in ("/", "/dev", "/run/secrets"):
                continue
            out.append(target)
        return sorted(set(out))


def nvbind(args, env=None, timeout=60):
    import engines
    e = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "NVBIND_LOG": "off"}
    e.update(env or {})
    return subprocess.run([engines.nvbind_exe(), *args], capture_output=True, text=True,
                          env=e, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="session")
def real():
    """The cached roots (built on first use: a few minutes, then seconds)."""
    if not IS_ROOT:
        pytest.skip("real-package hosts: debootstrap, chroot and mknod need root")
    for tool in ("debootstrap", "podman", "runc", "gcc"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed (make realhost installs it)")
    import realhost
    return realhost.build_all()


@pytest.fixture(scope="session")
def real_state(real, tmp_path_factory):
    """podman storage with both images imported (a debootstrap tree each)."""
    import engines
    state = str(tmp_path_factory.mktemp("realpodman"))
    pm = engines.Podman(state)
    pm.import_rootfs(real["base"], IMAGES["plain"])
    pm.import_rootfs(real["glvnd"], IMAGES["glvnd"])
    yield state
    subprocess.run(pm.base() + ["system", "reset", "--force"], capture_output=True, timeout=120)


@pytest.fixture(scope="session", params=["debian", "runfile"])
def host(request, real, real_state):
    """Each real layout; the persistenced socket bound afresh (a stale cache copy is a file
    a previous run may have removed)."""
    import simhost
    root = real[request.param]
    simhost.unix_socket(root + "/run/nvidia-persistenced/socket")
    return Host(request.param, root, real_state, real)


@pytest.fixture(scope="session")
def debian_host(real, real_state):
    import simhost
    simhost.unix_socket(real["debian"] + "/run/nvidia-persistenced/socket")
    return Host("debian", real["debian"], real_state, real)
