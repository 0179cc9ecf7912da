"""The live door and a container without a device cgroup of its own.

crun --cgroup-manager=disabled (what podman --cgroups=disabled uses) leaves the container in
its caller's cgroup: allowing GPU nodes there would allow them to every process sharing it,
the engine's included. nvbind refuses with one line and writes nothing."""
import os
import subprocess
import uuid

import pytest

pytestmark = pytest.mark.e2e


def _devices_list():
    with open("/proc/self/cgroup") as f:
        path = next(line.split(":", 2)[2].strip() for line in f if ":devices:" in line)
    with open(f"/sys/fs/cgroup/devices{path}/devices.list") as f:
        return path, f.read()


def test_refuses_a_device_cgroup_shared_with_the_hook(live_env, tmp_path):
    import engines
    root, image = live_env
    if not os.path.isdir("/sys/fs/cgroup/devices"):
        pytest.skip("no cgroup v1 devices hierarchy on this machine")
    log = str(tmp_path / "nvbind.log")
    bundle = engines.make_bundle(str(tmp_path / "b"), image, ["gpucheck", "/dev/nvidia1"],
                                 ["NVIDIA_VISIBLE_DEVICES=1"],
                                 {"createRuntime": [engines.nvbind_hook("createRuntime", root, log)]})
    before = _devices_list()
    cid = f"nvb-{uuid.uuid4().hex[:8]}"
    # as RUNTIMES["crun"]: crun needs the unified mount hidden on this hybrid layout
    r = subprocess.run(["unshare", "-m", "sh", "-c", "umount /sys/fs/cgroup/unified && exec crun "
                        f"--cgroup-manager=disabled run {cid}"], cwd=bundle, capture_output=True,
                       text=True, timeout=120)
    subprocess.run(["crun", "delete", "-f", cid], capture_output=True, timeout=60)
    assert r.returncode != 0, r.stdout
    # crun reports only the hook's exit status; nvbind's line is in its log
    import json
    with open(log) as f:
        entry = json.loads(f.read().splitlines()[-1])
    assert entry["stage"] == "createRuntime" and entry["outcome"] == "error", entry
    assert "no device cgroup of its own" in entry["error"], entry
    assert _devices_list() == before
