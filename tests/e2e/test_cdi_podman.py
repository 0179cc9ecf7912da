"""podman reads nvbind's CDI spec: --device nvidia.com/gpu=1 gives the container GPU 1."""
import json
import os
import uuid

import pytest

from conftest import run_nvbind


@pytest.fixture
def cdi_spec(podman_env):
    root, _pm = podman_env
    os.makedirs("/etc/cdi", exist_ok=True)
    path = f"/etc/cdi/nvbind-test-{uuid.uuid4().hex[:8]}.json"
    r = run_nvbind(["--root", root, "cdi", "generate", "--output", path])
    assert r.returncode == 0, r.stderr
    # The spec is for the host the root is: no root prefix (issue 12). This machine sees
    # that simulated host at `root`, so podman here gets the paths as this machine has them.
    with open(path) as f:
        spec = json.load(f)
    assert root not in json.dumps(spec)
    for e in [spec["containerEdits"]] + [d["containerEdits"] for d in spec["devices"]]:
        for m in e.get("mounts", []):
            m["hostPath"] = root + m["hostPath"]
        for n in e.get("deviceNodes", []):
            n["hostPath"] = root + n.get("hostPath", n["path"])
    with open(path, "w") as f:
        json.dump(spec, f)
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
