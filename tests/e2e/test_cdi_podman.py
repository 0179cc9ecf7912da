"""podman reads nvbind's CDI spec: --device nvidia.com/gpu=1 gives the container GPU 1."""
import json
import os
import uuid

import pytest

from conftest import write_cdi_spec


@pytest.fixture
def cdi_spec(podman_env):
    root, _pm = podman_env
    os.makedirs("/etc/cdi", exist_ok=True)
    path = f"/etc/cdi/nvbind-test-{uuid.uuid4().hex[:8]}.json"
    write_cdi_spec(root, path)
    yield path
    os.unlink(path)


def test_podman_cdi_device(podman_env, cdi_spec):
    import engines
    _root, pm = podman_env
    plain = engines.Podman(pm.state)        # no hooks dir: CDI alone
    r = plain.run(["gpucheck", "/dev/nvidia1", "/dev/nvidia0"], extra=["--device", "nvidia.com/gpu=1"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "open /dev/nvidia1: ENXIO" in r.stdout and "open /dev/nvidia0: ENOENT" in r.stdout
    assert "dlopen libcuda.so.1: OK" in r.stdout
