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
