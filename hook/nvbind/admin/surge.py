"""`nvbind config import-surge FILE`: the seed's Bolt/Surge service schema -> nvbind profiles.

    [services.NAME]        workload_type = "gaming" | "ai-ml", gpu_enabled = true
    [services.NAME.gaming] dlss_enabled, raytracing_enabled, performance_profile,
                           wine_proton_enabled, vrs_enabled
    [services.NAME.aiml]   cuda_cache_mb, tensor_cores_enabled, mixed_precision_enabled,
                           memory_pool_size, mig_enabled
    [services.NAME.gpu]    isolation_level, memory_limit
becomes [profiles.NAME] tables for /etc/nvbind/config.toml (printed as TOML).
"""

import json

from nvbind.errors import InputError

GAMING = {"dlss_enabled": "dlss", "raytracing_enabled": "raytracing",
          "wine_proton_enabled": "wine_proton", "vrs_enabled": "vrs",
          "performance_profile": "performance_profile"}
AIML = {"cuda_cache_mb": "cuda_cache_mb", "tensor_cores_enabled": "tensor_cores",
        "mixed_precision_enabled": "mixed_precision", "memory_pool_size": "memory_pool_size",
        "mig_enabled": "mig"}


def _name(service: str) -> str:
    out = "".join(c if c.isalnum() or c in "_.-" else "-" for c in service.lower()).strip("-_.")
    return out[:63] or "service"


def convert(doc: dict, where: str) -> tuple[dict, list[str]]:
    services = doc.get("services")
    if not isinstance(services, dict):
        raise InputError(f"{where}: no [services.*] tables")
    profiles, notes = {}, []
    for sname, svc in services.items():
        if not isinstance(svc, dict):
            continue
        if not svc.get("gpu_enabled"):
            notes.append(f"service {sname}: gpu_enabled is not true, no profile")
            continue
        kind = svc.get("workload_type", "default")
        p: dict = {"description": f"imported from service {sname} ({kind})"}
        if kind == "gaming":
            g = {GAMING[k]: v for k, v in (svc.get("gaming") or {}).items() if k in GAMING}
            unknown = sorted(set(svc.get("gaming") or {}) - set(GAMING))
            p["gaming"] = g
        elif kind == "ai-ml":
            p["capabilities"] = ["compute", "utility"]
            p["aiml"] = {AIML[k]: v for k, v in (svc.get("aiml") or {}).items() if k in AIML}
            unknown = sorted(set(svc.get("aiml") or {}) - set(AIML))
        else:
            unknown = []
            notes.append(f"service {sname}: workload_type '{kind}' has no knobs; default capabilities")
        if unknown:
            notes.append(f"service {sname}: ignored unknown setting(s) {', '.join(unknown)}")
        gpu = svc.get("gpu") or {}
        if "isolation_level" in gpu:
            p["isolation"] = gpu["isolation_level"]
        if "memory_limit" in gpu:
            p["memory_limit"] = gpu["memory_limit"]
        profiles[_name(sname)] = p
    return {"profiles": profiles}, notes


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return json.dumps(str(v))


def to_toml(doc: dict) -> str:
    out = []
    for name, p in doc["profiles"].items():
        out.append(f"[profiles.{json.dumps(name)}]")
        out += [f"{k} = {_value(v)}" for k, v in p.items() if not isinstance(v, dict)]
        for k, v in p.items():
            if isinstance(v, dict):
                out.append(f"\n[profiles.{json.dumps(name)}.{k}]")
                out += [f"{kk} = {_value(vv)}" for kk, vv in v.items()]
        out.append("")
    return "\n".join(out)
