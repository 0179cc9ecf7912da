"""The NVML backend's mapping, driven through a stand-in for the pynvml module."""
import types

from nvbind.host.nvml import NvmlBackend


class NVMLError(Exception):
    pass


def fake_pynvml(mig_on_first=True):
    gpus = [{"uuid": "GPU-aaa", "minor": 1, "bus": b"00000000:07:00.0", "name": b"NVIDIA H200",
             "mig": mig_on_first, "migs": [(1, 0, "MIG-one"), (2, 0, "MIG-two")]},
            {"uuid": "GPU-bbb", "minor": 0, "bus": "00000000:08:00.0", "name": "NVIDIA H200",
             "mig": False, "migs": []}]
    calls = []
    m = types.SimpleNamespace(NVMLError=NVMLError)
    m.nvmlInit = lambda: calls.append("init")
    m.nvmlShutdown = lambda: calls.append("shutdown")
    m.nvmlSystemGetDriverVersion = lambda: b"570.86.15"
    m.nvmlDeviceGetCount = lambda: len(gpus)
    m.nvmlDeviceGetHandleByIndex = lambda i: ("gpu", i)
    m.nvmlDeviceGetMigMode = lambda h: (1, 1) if gpus[h[1]]["mig"] else (0, 0)
    m.nvmlDeviceGetMaxMigDeviceCount = lambda h: 7

    def mig_handle(h, j):
        migs = gpus[h[1]]["migs"]
        if j >= len(migs):
            raise NVMLError("not found")
        return ("mig", h[1], j)
    m.nvmlDeviceGetMigDeviceHandleByIndex = mig_handle
    m.nvmlDeviceGetGpuInstanceId = lambda h: gpus[h[1]]["migs"][h[2]][0]
    m.nvmlDeviceGetComputeInstanceId = lambda h: gpus[h[1]]["migs"][h[2]][1]
    m.nvmlDeviceGetUUID = lambda h: gpus[h[1]]["uuid"] if h[0] == "gpu" else gpus[h[1]]["migs"][h[2]][2]
    m.nvmlDeviceGetMinorNumber = lambda h: gpus[h[1]]["minor"]
    m.nvmlDeviceGetPciInfo = lambda h: types.SimpleNamespace(busId=gpus[h[1]]["bus"])
    m.nvmlDeviceGetName = lambda h: gpus[h[1]]["name"]
    m.nvmlDeviceGetCudaComputeCapability = lambda h: (9, 0)
    m.nvmlDeviceGetBrand = lambda h: 2 if h[1] == 0 else 14
    m.nvmlSystemGetCudaDriverVersion_v2 = lambda: 12080
    m.nvmlDeviceGetPersistenceMode = lambda h: 1
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=5 << 30, total=141 << 30)
    m.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=88)
    m.nvmlDeviceGetTemperature = lambda h, sensor: 55
    m.nvmlDeviceGetPowerUsage = lambda h: 350000
    m.nvmlDeviceGetComputeRunningProcesses = lambda h: [types.SimpleNamespace(pid=10, usedGpuMemory=1 << 30)]
    m.nvmlDeviceGetGraphicsRunningProcesses = lambda h: []
    return m, calls


def test_nvml_backend_maps_to_gpu_records():
    mod, calls = fake_pynvml()
    b = NvmlBackend(mod)
    assert b.driver_version() == "570.86.15"
    recs = b.gpus()
    assert [(r.uuid, r.minor, r.bus_id, r.model) for r in recs] == [
        ("GPU-aaa", 1, "0000:07:00.0", "NVIDIA H200"), ("GPU-bbb", 0, "0000:08:00.0", "NVIDIA H200")]
    assert recs[0].migs == ((1, 0, "MIG-one"), (2, 0, "MIG-two"))
    assert recs[1].migs == ()
    assert (recs[0].arch, recs[0].brand, recs[1].brand) == ("9.0", "tesla", "nvidia")
    assert b.cuda_version() == "12.8"
    b.close()
    assert calls == ["init", "shutdown"]


def test_nvml_telemetry_for_metrics_and_doctor():
    mod, _ = fake_pynvml()
    b = NvmlBackend(mod)
    s = b.stats()
    assert s[0] == {"index": 0, "uuid": "GPU-aaa", "util": 88, "mem_used": 5 << 30, "mem_total": 141 << 30,
                    "temp": 55, "power_mw": 350000, "processes": [(10, 1 << 30)]}
    assert b.persistence() is True
    from nvbind.admin import metrics
    from nvbind.host.model import Gpu, Inventory
    inv = Inventory(root="/", backend="nvml", driver_version="570.86.15",
                    gpus=[Gpu(0, 1, "GPU-aaa", "0000:07:00.0", "NVIDIA H200", "/dev/nvidia1")])
    text = metrics.collect(inv, b, "/nonexistent-root", None)
    assert 'nvbind_gpu_power_watts{gpu="0",uuid="GPU-aaa"} 350' in text
    assert 'nvbind_container_gpu_memory_used_bytes{gpu="0",uuid="GPU-aaa",container="host"} 1073741824' in text
