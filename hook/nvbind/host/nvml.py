"""GPU backend through NVML (pynvml). Used by `info` on a real host, never on a hook path.

It yields the same GpuRecord list as the procfs backend, plus MIG UUIDs, which only NVML
knows. `pynvml` is imported here and nowhere else.
"""
from __future__ import annotations

from nvbind.host.model import GpuRecord
from nvbind.host.procfs import normalize_bus_id


def _s(v):
    return v.decode() if isinstance(v, bytes) else str(v)


class NvmlBackend:
    name = "nvml"

    def __init__(self, module=None):
        if module is None:
            import pynvml as module  # noqa: PLC0415 - kept off the hot path on purpose
        self.nv = module
        self.nv.nvmlInit()

    def close(self):
        try:
            self.nv.nvmlShutdown()
        except Exception:  # noqa: BLE001 - shutting down is best effort
            pass

    def driver_version(self) -> str | None:
        return _s(self.nv.nvmlSystemGetDriverVersion())

    def gpus(self) -> list[GpuRecord]:
        nv = self.nv
        out = []
        for i in range(nv.nvmlDeviceGetCount()):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            migs = []
            try:
                current, _pending = nv.nvmlDeviceGetMigMode(h)
            except nv.NVMLError:
                current = 0
            if current:
                for j in range(nv.nvmlDeviceGetMaxMigDeviceCount(h)):
                    try:
                        m = nv.nvmlDeviceGetMigDeviceHandleByIndex(h, j)
                    except nv.NVMLError:
                        continue
                    migs.append((nv.nvmlDeviceGetGpuInstanceId(m),
                                 nv.nvmlDeviceGetComputeInstanceId(m),
                                 _s(nv.nvmlDeviceGetUUID(m))))
            out.append(GpuRecord(
                minor=nv.nvmlDeviceGetMinorNumber(h),
                uuid=_s(nv.nvmlDeviceGetUUID(h)),
                bus_id=normalize_bus_id(_s(nv.nvmlDeviceGetPciInfo(h).busId)),
                model=_s(nv.nvmlDeviceGetName(h)),
                migs=tuple(sorted(migs)),
            ))
        return out
