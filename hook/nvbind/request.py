"""What a container asks for, from its environment and annotations (NVIDIA's semantics).

NVIDIA_VISIBLE_DEVICES
  unset          -> no GPU, unless the image is a legacy CUDA image (CUDA_VERSION set,
                    NVIDIA_REQUIRE_CUDA unset): then all GPUs
  "" / "void"    -> nothing at all: the container is left as it is
  "none"         -> no GPU device, but the driver (libraries, control nodes)
  "all"          -> every GPU
  list           -> comma separated: index, GPU-UUID, MIG-UUID, gpu:mig index, PCI bus id
NVIDIA_DRIVER_CAPABILITIES  comma separated from CAPABILITIES or "all";
                    unset or empty -> utility,compute (legacy images: all)
Annotations nvbind.io/gpus and nvbind.io/capabilities take precedence over the env.
"""
from __future__ import annotations

from nvbind.errors import InputError
from nvbind.capabilities import CAPABILITIES, DEFAULT_CAPABILITIES
from nvbind.record import Record

ANN_GPUS = "nvbind.io/gpus"
ANN_CAPS = "nvbind.io/capabilities"
ANN_PROFILE = "nvbind.io/profile"
ENV_DEVICES = "NVIDIA_VISIBLE_DEVICES"
ENV_CAPS = "NVIDIA_DRIVER_CAPABILITIES"
MAX_VALUE = 4096


class Request(Record):
    """wants_driver: inject anything at all; devices: "all" or selectors (empty for "none");
    source: where the device list came from."""

    __slots__ = ("wants_driver", "devices", "capabilities", "source", "reasons")
    DEFAULTS = {"reasons": ()}

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
            raise InputError(f"unknown capability '{item}' in {where}; "
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


def from_config(env: dict[str, str], annotations: dict[str, str]) -> Request:
    legacy = "CUDA_VERSION" in env and "NVIDIA_REQUIRE_CUDA" not in env
    reasons = []
    if ANN_GPUS in annotations:
        raw, where = annotations[ANN_GPUS], f"annotation {ANN_GPUS}"
    elif ENV_DEVICES in env:
        raw, where = env[ENV_DEVICES], f"env {ENV_DEVICES}"
    elif legacy:
        raw, where = "all", "legacy CUDA image (CUDA_VERSION set, NVIDIA_REQUIRE_CUDA unset)"
    else:
        return NO_REQUEST
    if raw.strip() in ("", "void"):
        return Request(False, (), (), where, (f"{where}={raw!r}: nothing to inject",))
    devices = parse_devices(raw, where)
    if ANN_CAPS in annotations:
        caps = parse_capabilities(annotations[ANN_CAPS], f"annotation {ANN_CAPS}", legacy)
        reasons.append(f"capabilities from annotation {ANN_CAPS}")
    else:
        caps = parse_capabilities(env.get(ENV_CAPS), f"env {ENV_CAPS}", legacy and ENV_CAPS not in env)
        reasons.append(f"capabilities from env {ENV_CAPS}" if env.get(ENV_CAPS, "").strip()
                       else "default capabilities" + (" (legacy image: all)" if legacy else ""))
    reasons.insert(0, f"devices from {where}={raw}")
    return Request(True, devices, caps, where, tuple(reasons))
