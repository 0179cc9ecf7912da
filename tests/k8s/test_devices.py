"""The device plugin's decisions (nvbind.k8s.devices): pure, over hand-made inventories."""
import pytest

from nvbind import settings as config
from nvbind.errors import InputError
from nvbind.host.model import Gpu, Inventory, Mig
from nvbind.k8s import devices as dv


def gpu(i, migs=()):
    return Gpu(index=i, minor=i, uuid=f"GPU-{i:08d}-0000-0000-0000-000000000000",
               bus_id=f"0000:{0x10 + i:02x}:00.0", model="NVIDIA A100", node=f"/dev/nvidia{i}",
               migs=tuple(Mig(gpu=i, index=k, gi=gi, ci=0, uuid=f"MIG-{i}{k}-uuid",
                              caps=(f"/dev/nvidia-caps/nvidia-cap{10 * i + k}",))
                          for k, gi in enumerate(migs)))


def inv(*gpus):
    return Inventory(root="/", backend="test", driver_version="550.54.14", gpus=list(gpus))


def st(**dp):
    cfg = dict(config.DEFAULTS)
    profiles = dp.pop("profiles", None)
    if profiles:
        cfg["profiles"] = profiles
    cfg["device_plugin"] = dp
    return dv.settings(cfg)


def ids(units):
    return [u.id for u in units]


def test_none_strategy_one_id_per_gpu_by_uuid():
    i = inv(gpu(0, migs=(1, 2)), gpu(1))
    res, notes = dv.plan(st(), i)
    assert list(res) == ["nvidia.com/gpu"]
    assert ids(res["nvidia.com/gpu"]) == [g.uuid for g in i.gpus]
    assert any("not advertised" in n for n in notes)


def test_single_strategy_mig_instances_are_the_gpu_resource():
    i = inv(gpu(0, migs=(1, 2)), gpu(1, migs=(1, 2)))
    profs = {"MIG-00-uuid": "3g.40gb", "MIG-01-uuid": "3g.40gb",
             "MIG-10-uuid": "3g.40gb", "MIG-11-uuid": "3g.40gb"}
    res, _ = dv.plan(st(mig_strategy="single"), i, mig_profiles=profs)
    assert ids(res["nvidia.com/gpu"]) == ["MIG-00-uuid", "MIG-01-uuid", "MIG-10-uuid", "MIG-11-uuid"]
    with pytest.raises(InputError, match="one MIG profile"):
        dv.plan(st(mig_strategy="single"), i, mig_profiles={**profs, "MIG-11-uuid": "1g.10gb"})
    with pytest.raises(InputError, match="MIG on every GPU"):
        dv.plan(st(mig_strategy="single"), inv(gpu(0, migs=(1,)), gpu(1)))
    # a node without MIG at all: its GPUs, as NVIDIA's plugin does
    assert ids(dv.plan(st(mig_strategy="single"), inv(gpu(0)))[0]["nvidia.com/gpu"]) == [gpu(0).uuid]


def test_mixed_strategy_names_resources_by_profile():
    i = inv(gpu(0, migs=(1, 2, 3)), gpu(1))
    profs = {"MIG-00-uuid": "1g.10gb", "MIG-01-uuid": "1g.10gb", "MIG-02-uuid": "3g.40gb"}
    res, _ = dv.plan(st(mig_strategy="mixed"), i, mig_profiles=profs)
    assert {r: ids(u) for r, u in res.items()} == {
        "nvidia.com/gpu": [gpu(1).uuid],
        "nvidia.com/mig-1g.10gb": ["MIG-00-uuid", "MIG-01-uuid"],
        "nvidia.com/mig-3g.40gb": ["MIG-02-uuid"]}
    mig = res["nvidia.com/mig-3g.40gb"][0]
    assert mig.nodes == ("/dev/nvidia0", "/dev/nvidia-caps/nvidia-cap2")
    a = dv.allocate(st(mig_strategy="mixed"), res["nvidia.com/mig-3g.40gb"], ["MIG-02-uuid"])
    assert a.envs["NVIDIA_VISIBLE_DEVICES"] == "MIG-02-uuid"
    assert a.cdi_devices == ("nvidia.com/gpu=MIG-02-uuid",)


def test_mig_without_uuid_uses_index_names_cdi_generate_writes():
    g = gpu(0, migs=(1,))
    g = Gpu(*[getattr(g, f) for f in Gpu.__slots__[:7]],
            migs=(Mig(gpu=0, index=0, gi=1, ci=0, uuid=None, caps=()),))
    res, _ = dv.plan(st(mig_strategy="single"), inv(g))
    (u,) = res["nvidia.com/gpu"]
    assert u.id == f"{g.uuid}:mig0" and u.selector == "0:0" and u.cdi == "0:0"


def test_replicas_follow_isolation():
    i = inv(gpu(0), gpu(1))
    res, _ = dv.plan(st(replicas=2), i)                       # default profile: shared
    assert ids(res["nvidia.com/gpu"]) == [f"{g.uuid}::{k}" for g in i.gpus for k in (0, 1)]
    excl = {"solo": {"isolation": "exclusive"}}
    res, _ = dv.plan(st(profile="solo", profiles=excl), i)
    assert ids(res["nvidia.com/gpu"]) == [g.uuid for g in i.gpus]
    with pytest.raises(InputError, match="exclusive"):
        st(profile="solo", profiles=excl, replicas=2)
    mps = {"mps": {"isolation": "virtual", "memory_limit": "4GB"}}
    s = st(profile="mps", profiles=mps, replicas=4)
    res, _ = dv.plan(s, i)
    assert len(res["nvidia.com/gpu"]) == 8
    a = dv.allocate(s, res["nvidia.com/gpu"], [f"{i.gpus[1].uuid}::3"], i)
    assert a.envs == {"NVIDIA_VISIBLE_DEVICES": i.gpus[1].uuid,
                      "CUDA_MPS_PIPE_DIRECTORY": "/tmp/nvidia-mps",
                      "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "25",
                      "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=4096M"}
    assert a.mounts == (("/tmp/nvidia-mps", "/tmp/nvidia-mps", False),)
    assert a.annotations["nvbind.io/isolation"] == "virtual"
    assert a.annotations["nvbind.io/profile"] == "mps"


def test_allocate_two_replicas_of_one_gpu_is_that_gpu_once():
    i = inv(gpu(0), gpu(1))
    s = st(replicas=3)
    res, _ = dv.plan(s, i)
    a = dv.allocate(s, res["nvidia.com/gpu"], [f"{i.gpus[0].uuid}::0", f"{i.gpus[0].uuid}::2"])
    assert a.envs["NVIDIA_VISIBLE_DEVICES"] == i.gpus[0].uuid
    assert a.cdi_devices == (f"nvidia.com/gpu={i.gpus[0].uuid}",)
    with pytest.raises(InputError, match="unknown device"):
        dv.allocate(s, res["nvidia.com/gpu"], ["GPU-x"])


def test_device_list_setting():
    i = inv(gpu(0))
    s = st(device_list=["cdi"])
    a = dv.allocate(s, dv.plan(s, i)[0]["nvidia.com/gpu"], [i.gpus[0].uuid])
    assert "NVIDIA_VISIBLE_DEVICES" not in a.envs and a.cdi_devices
    s = st(device_list=["envvar"])
    a = dv.allocate(s, dv.plan(s, i)[0]["nvidia.com/gpu"], [i.gpus[0].uuid])
    assert a.envs["NVIDIA_VISIBLE_DEVICES"] and not a.cdi_devices


def test_health_from_absent_nodes_and_bad_uuids():
    i = inv(gpu(0), gpu(1, migs=(1,)))
    units = dv.plan(st(mig_strategy="mixed"), i, mig_profiles={"MIG-10-uuid": "7g.80gb"})[0]
    assert dv.advertise(units["nvidia.com/gpu"], absent={"/dev/nvidia0"}) == \
        [(i.gpus[0].uuid, False, None)]
    mig = units["nvidia.com/mig-7g.80gb"]
    assert dv.advertise(mig, absent={"/dev/nvidia-caps/nvidia-cap10"})[0][1] is False
    assert dv.advertise(mig, absent={"/dev/nvidia0"})[0][1] is True
    assert dv.advertise(mig, bad={"MIG-10-uuid"})[0][1] is False


def four_gpus_two_numa():
    i = inv(*(gpu(k) for k in range(4)))
    topo = {g.bus_id: {"numa": g.index % 2,
                       "pci": ("pci0000:00" if g.index % 2 == 0 else "pci0000:80",
                               f"0000:00:0{g.index}.0", g.bus_id)} for g in i.gpus}
    return i, topo


def test_preferred_allocation_keeps_gpus_close():
    i, topo = four_gpus_two_numa()
    units = dv.plan(st(), i, topology=topo)[0]["nvidia.com/gpu"]
    u = [g.uuid for g in i.gpus]
    assert [x.numa for x in units] == [0, 1, 0, 1]
    assert dv.preferred(units, u, [], 2) == [u[0], u[2]]          # NUMA 0 pair
    assert dv.preferred(units, u, [u[1]], 2) == [u[1], u[3]]      # must include: NUMA 1 pair
    assert dv.preferred(units, [u[0], u[1], u[3]], [], 2) == [u[1], u[3]]   # the pair left
    # no topology: stable order
    plain = dv.plan(st(), i)[0]["nvidia.com/gpu"]
    assert dv.preferred(plain, list(reversed(u)), [], 2) == [u[0], u[1]]


def test_preferred_allocation_spreads_replicas_over_gpus():
    i, topo = four_gpus_two_numa()
    units = dv.plan(st(replicas=2), i, topology=topo)[0]["nvidia.com/gpu"]
    got = dv.preferred(units, [x.id for x in units], [], 2)
    assert len({g.split("::")[0] for g in got}) == 2


def test_bad_settings():
    with pytest.raises(InputError, match="mig_strategy"):
        st(mig_strategy="all")
    with pytest.raises(InputError, match="replicas"):
        st(replicas=0)


def test_config_file_device_plugin_table(tmp_path):
    ok = config.parse("c.toml", b'[device_plugin]\nmig_strategy = "mixed"\nreplicas = 4\n'
                                b'device_list = ["cdi"]\n')
    assert ok["device_plugin"]["replicas"] == 4
    with pytest.raises(InputError, match="device_plugin.mig_strategy"):
        config.parse("c.toml", b'[device_plugin]\nmig_strategy = "some"\n')
    with pytest.raises(InputError, match="device_plugin"):
        config.parse("c.toml", b'[device_plugin]\nreplica = 4\n')


def test_mig_profile_from_nvml_device_name(monkeypatch):
    """NVML names a MIG device '<GPU name> MIG <profile>'; the profile is what mixed
    resource names use. NVML itself is not on the test machines: a module answering
    the same calls stands in for it (the parsing is what is tested)."""
    import sys
    import types

    from nvbind.k8s import plugin
    g = gpu(0, migs=(1, 2))
    fake = types.SimpleNamespace(
        NVMLError=Exception, nvmlInit=lambda: None, nvmlShutdown=lambda: None,
        nvmlDeviceGetHandleByUUID=lambda u: ("gpu", u),
        nvmlDeviceGetMaxMigDeviceCount=lambda h: 7,
        nvmlDeviceGetMigDeviceHandleByIndex=lambda h, j: (_ for _ in ()).throw(Exception("none"))
        if j > 1 else ("mig", j),
        nvmlDeviceGetName=lambda m: [b"NVIDIA A100-SXM4-80GB MIG 1g.10gb",
                                     "NVIDIA A100-SXM4-80GB MIG 3g.40gb"][m[1]],
        nvmlDeviceGetUUID=lambda m: f"MIG-0{m[1]}-uuid")
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    profs = plugin.nvml_mig_profiles(inv(g))
    assert profs == {"MIG-00-uuid": "1g.10gb", "MIG-01-uuid": "3g.40gb"}
    res, _ = dv.plan(st(mig_strategy="mixed"), inv(g), mig_profiles=profs)
    assert sorted(res) == ["nvidia.com/mig-1g.10gb", "nvidia.com/mig-3g.40gb"]
