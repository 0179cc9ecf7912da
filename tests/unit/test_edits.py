import json

import pytest

from conftest import decide_edits

from nvbind.core import edits, profiles
from nvbind.errors import InputError
from nvbind.host import inventory
from nvbind.host.model import GpuRecord
from nvbind.host.procfs import ProcfsBackend
from nvbind.core.request import from_config

HOOK = ("/usr/local/bin/nvbind", "nvbind")


def plan(inv, env, ann=None):
    return decide_edits(inv, env, ann, hook=HOOK)


@pytest.fixture(scope="module")
def inv(sim_root):
    return inventory.build(sim_root)


def test_one_gpu(inv):
    ed = plan(inv, {"NVIDIA_VISIBLE_DEVICES": "1"})
    paths = [d.path for d in ed.devices]
    assert paths == ["/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia1", "/dev/nvidiactl"]
    assert "/dev/nvidia0" not in paths
    # one exact rw rule per node, nothing wider
    assert [(r.major, r.minor, r.access) for r in ed.cgroup] == \
        [(d.major, d.minor, "rw") for d in ed.devices]
    assert ed.gpus == [inv.gpus[1].uuid]
    mounts = {m.destination: m for m in ed.mounts}
    cuda = mounts["/usr/lib64/libcuda.so.550.54.14"]
    assert cuda.options == ("ro", "nosuid", "nodev", "bind")
    assert cuda.source.endswith("/usr/lib64/libcuda.so.550.54.14")
    assert mounts["/run/nvidia-persistenced/socket"].options == ("ro", "nosuid", "nodev", "noexec", "bind")
    assert not [m for m in mounts if "GLX" in m or "vulkan" in m]   # no graphics asked
    assert ("/usr/lib64/libcuda.so.1", "libcuda.so.550.54.14") in [(s.link, s.target) for s in ed.symlinks]
    assert ed.ldcache_folders == ["/usr/lib64"]
    (hook,) = ed.hooks
    assert hook.stage == "createContainer" and hook.path == HOOK[0]
    assert hook.env == ("PATH=/usr/sbin:/usr/bin:/sbin:/bin",)
    assert hook.args[:3] == ("nvbind", "hook", "createContainer")
    assert "--folder" in hook.args and "/usr/lib64" in hook.args


@pytest.mark.parametrize("sel, gpu", [("0", 0), ("1", 1), ("0000:11:00.0", 1), ("11:00.0", 1),
                                      ("00000000:10:00.0", 0)])
def test_selectors(inv, sel, gpu):
    assert plan(inv, {"NVIDIA_VISIBLE_DEVICES": sel}).gpus == [inv.gpus[gpu].uuid]


def test_uuid_selector_any_case(inv):
    uuid = inv.gpus[0].uuid
    assert plan(inv, {"NVIDIA_VISIBLE_DEVICES": uuid.upper().replace("GPU", "gpu")}).gpus == [uuid]


def test_all(inv):
    ed = plan(inv, {"NVIDIA_VISIBLE_DEVICES": "all"})
    assert {"/dev/nvidia0", "/dev/nvidia1"} <= {d.path for d in ed.devices}


def test_mig_by_index(inv):
    ed = plan(inv, {"NVIDIA_VISIBLE_DEVICES": "0:1"})
    paths = {d.path for d in ed.devices}
    assert {"/dev/nvidia0", "/dev/nvidia-caps/nvidia-cap23", "/dev/nvidia-caps/nvidia-cap24"} <= paths
    assert "/dev/nvidia-caps/nvidia-cap13" not in paths
    assert ed.gpus == ["0:1"]


def test_none_gives_driver_but_no_gpu(inv):
    ed = plan(inv, {"NVIDIA_VISIBLE_DEVICES": "none"})
    paths = {d.path for d in ed.devices}
    assert "/dev/nvidiactl" in paths and not paths & {"/dev/nvidia0", "/dev/nvidia1"}
    assert any(m.destination.endswith("libcuda.so.550.54.14") for m in ed.mounts)


def test_graphics_adds_drm_modeset_and_icds(inv):
    ed = plan(inv, {"NVIDIA_VISIBLE_DEVICES": "1", "NVIDIA_DRIVER_CAPABILITIES": "graphics,display"})
    paths = {d.path for d in ed.devices}
    assert {"/dev/nvidia-modeset", "/dev/dri/card2", "/dev/dri/renderD129"} <= paths
    assert "/dev/dri/card1" not in paths
    assert "/usr/share/vulkan/icd.d/nvidia_icd.json" in {m.destination for m in ed.mounts}


@pytest.mark.parametrize("sel", ["7", "GPU-nope", "MIG-nope", "0:9", "0000:99:00.0", "banana"])
def test_unknown_device_lists_what_exists(inv, sel):
    with pytest.raises(InputError) as e:
        plan(inv, {"NVIDIA_VISIBLE_DEVICES": sel})
    msg = str(e.value)
    assert f"'{sel}'" in msg and inv.gpus[0].uuid in msg and "0000:11:00.0" in msg


def test_no_request_no_edits(inv):
    ed = plan(inv, {})
    assert ed.empty and ed.devices == [] and ed.hooks == []


def test_deterministic(inv):
    a = json.dumps(plan(inv, {"NVIDIA_VISIBLE_DEVICES": "1,0"}).to_json(), sort_keys=True)
    b = json.dumps(plan(inventory.build(inv.root), {"NVIDIA_VISIBLE_DEVICES": "1,0"}).to_json(),
                   sort_keys=True)
    assert a == b


class FakeNvml:
    """Stands in for NVML through the backend interface: MIG UUIDs come only from here."""

    name = "fake-nvml"

    def __init__(self, root):
        self.procfs = ProcfsBackend(root)

    def driver_version(self):
        return self.procfs.driver_version()

    def gpus(self):
        out = []
        for r in self.procfs.gpus():
            migs = tuple((gi, ci, f"MIG-{r.minor}-{gi}-{ci}") for gi, ci, _ in r.migs)
            out.append(GpuRecord(r.minor, r.uuid, r.bus_id, r.model, migs))
        return out


def test_mig_by_uuid_with_nvml_backend(sim_root):
    inv = inventory.build(sim_root, FakeNvml(sim_root))
    ed = plan(inv, {"NVIDIA_VISIBLE_DEVICES": "MIG-0-2-0"})
    assert ed.gpus == ["MIG-0-2-0"]
    assert "/dev/nvidia-caps/nvidia-cap23" in {d.path for d in ed.devices}


def test_no_driver_is_an_error_for_gpu_requests(tmp_path):
    inv = inventory.build(str(tmp_path))
    with pytest.raises(InputError, match="no NVIDIA driver"):
        plan(inv, {"NVIDIA_VISIBLE_DEVICES": "0"})
    assert plan(inv, {}).empty


def test_unknown_profile():
    with pytest.raises(InputError, match="known: ai-ml, default, gaming"):
        profiles.get("turbo")
