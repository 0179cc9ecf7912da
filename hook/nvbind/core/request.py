"""What a container asks for, from its environment, annotations and mounts (NVIDIA's semantics).

NVIDIA_VISIBLE_DEVICES
  unset          -> no GPU, unless the image is a legacy CUDA image (CUDA_VERSION set,
                    NVIDIA_REQUIRE_CUDA unset): then all GPUs
  "" / "void"    -> nothing at all: the container is left as it is
  "none"         -> no GPU device, but the driver (libraries, control nodes)
  "all"          -> every GPU
  list           -> comma separated: index, GPU-UUID, MIG-UUID, gpu:mig index, PCI bus id
NVIDIA_DRIVER_CAPABILITIES  comma separated from CAPABILITIES or "all";
                    unset or empty -> utility,compute (legacy images: all)
NVIDIA_REQUIRE_*   constraints (see requirements.py), NVIDIA_DISABLE_REQUIRE skips them
NVIDIA_MIG_CONFIG_DEVICES / NVIDIA_MIG_MONITOR_DEVICES   "all": MIG management nodes,
                    privileged containers only
Annotations nvbind.io/gpus, nvbind.io/capabilities take precedence over the env;
nvbind.io/isolation and nvbind.io/memory-limit over the profile. Mounts whose destination
is /var/run/nvidia-container-devices/<device> name devices too, when the configuration
allows that source (NVIDIA's volume-mount convention).
"""

from nvbind.core.capabilities import CAPABILITIES, DEFAULT_CAPABILITIES
from nvbind.errors import InputError
from nvbind.record import Record

ANN_PREFIX = "nvbind.io/"
ANN_GPUS = "nvbind.io/gpus"
ANN_CAPS = "nvbind.io/capabilities"
ANN_PROFILE = "nvbind.io/profile"
ANN_ISOLATION = "nvbind.io/isolation"
ANN_MEMORY = "nvbind.io/memory-limit"
ENV_DEVICES = "NVIDIA_VISIBLE_DEVICES"
ENV_CAPS = "NVIDIA_DRIVER_CAPABILITIES"
MOUNT_PREFIX = "/var/run/nvidia-container-devices/"
MAX_VALUE = 4096
CAP_SYS_ADMIN = "CAP_SYS_ADMIN"
SOURCES = {"env": True, "annotations": True, "mounts": False}


class Request(Record):
    """wants_driver: inject anything at all; devices: "all" or selectors (empty for "none");
    source: where the device list came from; requires: NVIDIA_REQUIRE_* expressions."""

    __slots__ = ("wants_driver", "devices", "capabilities", "source", "reasons", "isolation",
                 "memory_limit", "privileged", "requires", "mig_config", "mig_monitor",
                 "caps_source")
    DEFAULTS = {"reasons": (), "isolation": None, "memory_limit": None, "privileged": False,
                "requires": (), "mig_config": False, "mig_monitor": False,
                "caps_source": "default capabilities"}


    @property
    def empty(self) -> bool:
        return not self.wants_driver


NO_REQUEST = Request(False, (), (), "none")


def _check_len(value: str, where: str) -> str:
    if len(value) > MAX_VALUE:
        raise InputError(f"{where} is longer than {MAX_VALUE} characters")
    return value


def parse_capabilities(value: str | None, where: str, legacy: bool) -> tuple[str, ...]:
    if value is None or value.strip() == "":
        return tuple(sorted(CAPABILITIES)) if legacy else tuple(sorted(DEFAULT_CAPABILITIES))
    caps = set()
    for item in _check_len(value, where).split(","):
        item = item.strip()
        if not item:
            continue
        if item == "all":
            caps.update(CAPABILITIES)
        elif item in CAPABILITIES:
            caps.add(item)
        else:
            raise InputError(f"unknown capability '{item[:40]}' in {where}; "
                             f"known: {','.join(sorted(CAPABILITIES))},all")
    return tuple(sorted(caps))


_SELECTOR_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789:.-")


def parse_devices(value: str, where: str) -> tuple[str, ...] | str:
    value = _check_len(value, where).strip()
    if value == "all":
        return "all"
    if value == "none":
        return ()
    out = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        if item in ("all", "none", "void"):
            raise InputError(f"'{item}' cannot be combined with other devices in {where}")
        if not set(item) <= _SELECTOR_CHARS:
            raise InputError(f"malformed device '{item[:80]}' in {where}")
        if item not in out:
            out.append(item)
    return tuple(out)


def privileged(cfg: dict) -> bool:
    """NVIDIA's test: CAP_SYS_ADMIN in the bounding set."""
    caps = ((cfg.get("process") or {}).get("capabilities") or {}).get("bounding") or []
    return CAP_SYS_ADMIN in caps


def mount_devices(cfg: dict) -> list[str]:
    out = []
    for m in cfg.get("mounts") or []:
        d = m.get("destination", "") if isinstance(m, dict) else ""
        if isinstance(d, str) and d.startswith(MOUNT_PREFIX) and d[len(MOUNT_PREFIX):]:
            out.append(d[len(MOUNT_PREFIX):])
    return out


def mentions(env: dict[str, str], annotations: dict[str, str], cfg: dict) -> bool:
    """Could this container be asking for anything, under any configuration? Presence of
    keys only, nothing parsed: a container for which this is False is passed through
    before the configuration is read, so a broken configuration cannot harm it."""
    if ENV_DEVICES in env:
        if env[ENV_DEVICES].strip() not in ("", "void"):
            return True
    elif "CUDA_VERSION" in env:
        return True
    if any(k.startswith(ANN_PREFIX) for k in annotations):
        return True
    return bool(mount_devices(cfg))


def from_config(env: dict[str, str], annotations: dict[str, str], cfg: dict | None = None,
                gates: dict | None = None) -> Request:
    """The request under `gates` ({env, annotations, mounts}: which sources count for this
    container; nvbind.decide works them out from the configuration). No policy here."""
    gates = {**SOURCES, **(gates or {})}
    cfg = cfg or {}
    priv = privileged(cfg)
    legacy = "CUDA_VERSION" in env and "NVIDIA_REQUIRE_CUDA" not in env
    env_ok, ann_ok = gates["env"], gates["annotations"]
    mount_devs = mount_devices(cfg) if gates["mounts"] else []
    reasons = []
    if ann_ok and ANN_GPUS in annotations:
        raw, where = annotations[ANN_GPUS], f"annotation {ANN_GPUS}"
    elif mount_devs:
        raw, where = ",".join(mount_devs), f"mounts at {MOUNT_PREFIX}"
    elif env_ok and ENV_DEVICES in env:
        raw, where = env[ENV_DEVICES], f"env {ENV_DEVICES}"
    elif env_ok and legacy:
        raw, where = "all", "legacy CUDA image (CUDA_VERSION set, NVIDIA_REQUIRE_CUDA unset)"
    else:
        return NO_REQUEST
    if raw.strip() in ("", "void"):
        return Request(False, (), (), where, (f"{where}={raw!r}: nothing to inject",))
    devices = parse_devices(raw, where)
    if ann_ok and ANN_CAPS in annotations:
        caps = parse_capabilities(annotations[ANN_CAPS], f"annotation {ANN_CAPS}", legacy)
        caps_source = f"annotation {ANN_CAPS}"
    else:
        caps = parse_capabilities(env.get(ENV_CAPS), f"env {ENV_CAPS}", legacy and ENV_CAPS not in env)
        caps_source = (f"env {ENV_CAPS}" if env.get(ENV_CAPS, "").strip()
                       else "default capabilities" + (" (legacy image: all)" if legacy else ""))
    reasons.insert(0, f"devices from {where}={raw}")
    iso = mem = None
    if ann_ok:
        iso = annotations.get(ANN_ISOLATION)
        if iso is not None and iso not in ("shared", "exclusive", "virtual"):
            raise InputError(f"annotation {ANN_ISOLATION}: '{iso[:40]}' is not one of "
                             "shared, exclusive, virtual")
        if ANN_MEMORY in annotations:
            from nvbind.core.profiles import parse_size
            mem = parse_size(_check_len(annotations[ANN_MEMORY], ANN_MEMORY), f"annotation {ANN_MEMORY}")
    requires = () if _truthy(env.get("NVIDIA_DISABLE_REQUIRE")) else tuple(
        _check_len(v, k) for k, v in sorted(env.items()) if k.startswith("NVIDIA_REQUIRE_") and v.strip())
    mig = {}
    for key in ("NVIDIA_MIG_CONFIG_DEVICES", "NVIDIA_MIG_MONITOR_DEVICES"):
        v = env.get(key, "").strip()
        if v and v != "all":
            raise InputError(f"env {key}: only 'all' is supported, got '{v[:40]}'")
        if v and not priv:
            raise InputError(f"env {key} needs a privileged container (CAP_SYS_ADMIN)")
        mig[key] = bool(v)
    return Request(True, devices, caps, where, tuple(reasons), iso, mem, priv, requires,
                   mig["NVIDIA_MIG_CONFIG_DEVICES"], mig["NVIDIA_MIG_MONITOR_DEVICES"], caps_source)


def _truthy(v: str | None) -> bool:
    return v is not None and v.strip().lower() not in ("", "0", "false", "no")
