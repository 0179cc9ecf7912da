"""GPU backend through NVML (pynvml). Used by `info` on a real host, never on a hook path.

It yields the same GpuRecord list as the procfs backend, plus MIG UUIDs, which only NVML
knows. `pynvml` is imported here and nowhere else.
"""

from nvbind.host.model import GpuRecord
from nvbind.host.procfs import normalize_bus_id


def _s(v):
    return v.decode() if isinstance(v, bytes) else str(v)


# libnvidia-container's names for nvmlBrandType values, as NVIDIA_REQUIRE_* brand= uses them
BRANDS = ("unknown", "quadro", "tesla", "nvs", "grid", "geforce", "titan", "nvidiavapps",
          "nvidiavpc", "nvidiavcs", "nvidiavws", "nvidiacloudgaming", "quadrortx", "nvidiartx",
          "nvidia", "geforcertx", "titanrtx")


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

    def cuda_version(self) -> str | None:
        try:
            v = self.nv.nvmlSystemGetCudaDriverVersion_v2()
        except Exception:  # noqa: BLE001 - older NVML: no CUDA version, requirement says unknown
            return None
        return f"{v // 1000}.{(v % 1000) // 10}"

    def persistence(self) -> bool | None:
        """True when every GPU has persistence mode on."""
        nv = self.nv
        try:
            return all(nv.nvmlDeviceGetPersistenceMode(nv.nvmlDeviceGetHandleByIndex(i)) == 1
                       for i in range(nv.nvmlDeviceGetCount()))
        except nv.NVMLError:
            return None

    def stats(self) -> list[dict]:
        """Telemetry per GPU for `nvbind metrics` (never on a hook path)."""
        nv = self.nv
        out = []
        for i in range(nv.nvmlDeviceGetCount()):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            mem = nv.nvmlDeviceGetMemoryInfo(h)
            procs = []
            for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
                try:
                    procs += [(p.pid, p.usedGpuMemory) for p in getattr(nv, getter)(h)]
                except (nv.NVMLError, AttributeError):
                    pass
            out.append({"index": i, "uuid": _s(nv.nvmlDeviceGetUUID(h)),
                        "util": nv.nvmlDeviceGetUtilizationRates(h).gpu,
                        "mem_used": mem.used, "mem_total": mem.total,
                        "temp": nv.nvmlDeviceGetTemperature(h, 0),     # NVML_TEMPERATURE_GPU
                        "power_mw": nv.nvmlDeviceGetPowerUsage(h),
                        "processes": sorted(set(procs))})
        return out

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
            try:
                major, minor = nv.nvmlDeviceGetCudaComputeCapability(h)
                arch = f"{major}.{minor}"
            except nv.NVMLError:
                arch = None
            try:
                b = nv.nvmlDeviceGetBrand(h)
                brand = BRANDS[b] if 0 < b < len(BRANDS) else None
            except nv.NVMLError:
                brand = None
            out.append(GpuRecord(
                arch=arch, brand=brand,
                minor=nv.nvmlDeviceGetMinorNumber(h),
                uuid=_s(nv.nvmlDeviceGetUUID(h)),
                bus_id=normalize_bus_id(_s(nv.nvmlDeviceGetPciInfo(h).busId)),
                model=_s(nv.nvmlDeviceGetName(h)),
                migs=tuple(sorted(migs)),
            ))
        return out
