"""Workload profiles: what a kind of work needs, mapped to real mechanisms.

A profile is the same data whether built in or written in the config's [profiles.NAME]:
capabilities, env, mounts, devices, isolation, memory_limit, mps_thread_percentage, and
the seed's knobs under [aiml] / [gaming]. `resolve` turns it into a Profile whose env
entries each name the software that reads them (see README, "Profiles").
"""

from nvbind.errors import InputError
from nvbind.record import Record

BUILTIN = {
    "default": {"description": "what the request asks for, nothing more"},
    "ai-ml": {
        "description": "CUDA training and inference",
        "capabilities": ["compute", "utility"],
        "aiml": {"cuda_cache_mb": 4096, "tensor_cores": True, "mixed_precision": True},
    },
    "gaming": {
        "description": "Vulkan/OpenGL games, Wine/Proton, DLSS",
        "capabilities": ["graphics", "display", "ngx", "utility", "compute", "video"],
        "gaming": {"dlss": True, "raytracing": True, "wine_proton": True, "vrs": True,
                   "performance_profile": "balanced", "shader_cache_mb": 1024},
    },
}
ISOLATION = ("shared", "exclusive", "virtual")


class Profile(Record):
    """env: ((name, value, what reads it), ...); capabilities: None means as requested;
    mounts: ((host path, container path, read only), ...); devices: (/dev paths);
    memory_limit: bytes or None."""

    __slots__ = ("name", "env", "capabilities", "mounts", "devices", "isolation",
                 "memory_limit", "mps_thread_percentage", "dlss")
    DEFAULTS = {"env": (), "capabilities": None, "mounts": (), "devices": (), "isolation": "shared",
                "memory_limit": None, "mps_thread_percentage": None, "dlss": False}


def parse_size(text, where: str) -> int:
    """'12GB', '512M', '1.5GiB', '1024' -> bytes (1 GB = 1 GiB = 2**30, as CUDA reads it)."""
    s = str(text).strip().upper().replace(" ", "")
    if s.endswith("IB"):
        s = s[:-2]
    elif s.endswith("B"):
        s = s[:-1]
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(s[-1:], 1)
    num = s[:-1] if s[-1:] in "KMGT" and s else s
    shown = str(text)[:40]
    try:
        # digits and one dot only: float() alone takes nan, inf, 1e400, '1_0'
        if not num or num.count(".") > 1 or not num.replace(".", "").isdigit() \
                or not num.isascii():
            raise ValueError
        value = float(num)
    except ValueError:
        raise InputError(f"{where}: '{shown}' is not a size like 12GB or 512M") from None
    if value <= 0:
        raise InputError(f"{where}: size must be positive, got '{shown}'")
    if value * mult >= 1 << 60:
        raise InputError(f"{where}: size '{shown}' is too large")
    return int(value * mult)


def known(config: dict | None) -> list[str]:
    return sorted(set(BUILTIN) | set((config or {}).get("profiles", {})))


def resolve(name: str | None, config: dict | None = None) -> Profile:
    config = config or {}
    name = name or config.get("default_profile") or "default"
    data = (config.get("profiles") or {}).get(name) or BUILTIN.get(name)
    if data is None:
        raise InputError(f"unknown profile '{name}'; known: {', '.join(known(config))}")
    return build(name, data)


def get(name: str | None) -> Profile:
    """A built-in profile (no configuration)."""
    return resolve(name, None)


def build(name: str, d: dict) -> Profile:
    env: dict[str, tuple[str, str]] = {}
    caps = d.get("capabilities")
    if caps is not None:
        caps = set(caps)
        if "all" in caps:
            from nvbind.core.capabilities import CAPABILITIES
            caps = set(CAPABILITIES)
    aiml, gaming = d.get("aiml") or {}, d.get("gaming") or {}
    if "cuda_cache_mb" in aiml:
        env["CUDA_CACHE_MAXSIZE"] = (str(int(aiml["cuda_cache_mb"]) << 20),
                                     "the CUDA driver (JIT compilation cache size, bytes)")
    if aiml.get("tensor_cores") is False:
        env["NVIDIA_TF32_OVERRIDE"] = ("0", "cuBLAS/cuDNN: TF32 tensor-core math off "
                                            "(it is on by default; 1 would not force it)")
    if aiml.get("mixed_precision"):
        env["NVBIND_MIXED_PRECISION"] = ("1", "nvbind marker only: frameworks enable mixed "
                                              "precision in code (torch.autocast, keras)")
    if aiml.get("memory_pool_size"):
        env["NVBIND_MEMORY_POOL_SIZE"] = (str(parse_size(aiml["memory_pool_size"], "aiml.memory_pool_size")),
                                          "nvbind marker only; an enforced limit is "
                                          "isolation=virtual with memory_limit")
    if aiml.get("mig"):
        env["NVBIND_MIG"] = ("1", "nvbind marker: the workload expects MIG devices "
                                  "(request them as gpu:mig or MIG-UUID)")
    dlss = bool(gaming.get("dlss"))
    if gaming:
        if caps is None:
            caps = set()
        caps |= {"graphics", "display", "utility"}
        if dlss:
            caps.add("ngx")     # libnvidia-ngx and the nvngx.dll files Proton looks for
        if gaming.get("raytracing"):
            caps.add("graphics")   # libnvidia-rtcore, libnvoptix and the Vulkan ICD
        if gaming.get("wine_proton"):
            env["PROTON_ENABLE_NVAPI"] = ("1", "Proton (NVAPI for DLSS/Reflex in Windows games)")
            env["DXVK_ENABLE_NVAPI"] = ("1", "DXVK (report an NVIDIA GPU, enable NVAPI)")
        if gaming.get("vrs"):
            env["NVBIND_VRS"] = ("1", "nvbind marker only: variable-rate shading is a Vulkan/"
                                      "D3D12 feature the driver always offers")
        perf = gaming.get("performance_profile")
        if perf in ("ultra-low-latency", "performance"):
            env["__GL_SYNC_TO_VBLANK"] = ("0", "NVIDIA OpenGL driver (vsync off)")
        elif perf in ("balanced", "quality"):
            env["__GL_SYNC_TO_VBLANK"] = ("1", "NVIDIA OpenGL driver (vsync on)")
        if perf == "ultra-low-latency":
            env["__GL_MaxFramesAllowed"] = ("1", "NVIDIA OpenGL driver (one frame queued)")
        if gaming.get("shader_cache_mb"):
            env["__GL_SHADER_DISK_CACHE"] = ("1", "NVIDIA OpenGL driver (shader disk cache on)")
            env["__GL_SHADER_DISK_CACHE_SIZE"] = (str(int(gaming["shader_cache_mb"]) << 20),
                                                  "NVIDIA OpenGL driver (shader cache size, bytes)")
    for k, v in (d.get("env") or {}).items():
        env[k] = (str(v), f"profile {name} (set by the configuration)")
    mounts = tuple((m["host_path"], m["container_path"], m.get("read_only", True))
                   for m in d.get("mounts") or [])
    limit = parse_size(d["memory_limit"], f"profile {name}: memory_limit") \
        if d.get("memory_limit") else None
    iso = d.get("isolation", "shared")
    if iso not in ISOLATION:
        raise InputError(f"profile {name}: isolation '{iso}' is not one of {', '.join(ISOLATION)}")
    return Profile(name=name, env=tuple((k, v, r) for k, (v, r) in sorted(env.items())),
                   capabilities=tuple(sorted(caps)) if caps is not None else None,
                   mounts=mounts, devices=tuple(d.get("devices") or ()), isolation=iso,
                   memory_limit=limit, mps_thread_percentage=d.get("mps_thread_percentage"),
                   dlss=dlss)
