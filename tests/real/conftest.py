"""Real-package hosts (tools/realhost.py) and real podman containers started through
nvbind's precreate hook (hooks.d, `nvbind --root <host root> hook precreate`).

Two host layouts, each test run on both: "debian" (Debian 12's NVIDIA 535 packages installed
by apt in a debootstrap root: alternatives, nvidia/current directories) and "runfile"
(NVIDIA's .run installer layout, flat library directories, made from the same files).
Two images: "plain" (debootstrap minbase bookworm) and "glvnd" (with the glvnd, Vulkan and
OpenCL loaders). A dlopen checker built on this host is bind-mounted at /usr/local/bin.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from realenv import IMAGES, Host

IS_ROOT = os.geteuid() == 0

def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/real/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


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
