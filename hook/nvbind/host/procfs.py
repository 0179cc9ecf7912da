"""The driver's procfs files, read under a host root, in the formats the driver writes.

/proc/driver/nvidia/version
    NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 01:44:30 UTC 2024
    NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.14  Release Build  (...)
/proc/driver/nvidia/gpus/<bus>/information   "Key: \\t value" lines (Model, GPU UUID,
    Bus Location, Device Minor, ...)
/proc/devices                                 "Character devices:" then "<major> <name>"
/proc/driver/nvidia-caps/mig-minors           "gpu0/gi1/access 12" lines
/proc/driver/nvidia/capabilities/gpu<minor>/mig/gi<N>/ci<M>/access  exist per MIG instance
"""

import os

from nvbind.host.model import GpuRecord

MAX_PROC_FILE = 1 << 20


def _read(root: str, path: str) -> str | None:
    try:
        with open(root.rstrip("/") + path, "rb") as f:
            return f.read(MAX_PROC_FILE).decode("utf-8", "replace")
    except OSError:
        return None


def parse_version(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith("NVRM version:"):
            _, found, rest = line.partition("Kernel Module")
            if not found:
                continue
            words = rest.split()
            if words[:1] == ["for"]:
                words = words[2:]
            if words and _is_version(words[0]):
                return words[0]
    return None


def _is_version(word: str) -> bool:
    parts = word.split(".")
    return 2 <= len(parts) <= 3 and all(p.isdigit() for p in parts)


def driver_version(root: str) -> str | None:
    text = _read(root, "/proc/driver/nvidia/version")
    return parse_version(text) if text else None


def parse_information(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def normalize_bus_id(bus: str) -> str:
    """'00000000:07:00.0' / '0000:07:00.0' / '07:00.0' -> '0000:07:00.0' (lower case)."""
    bus = bus.strip().lower()
    parts = bus.split(":")
    if len(parts) == 2:
        parts.insert(0, "0000")
    if len(parts) != 3:
        return bus
    try:
        domain = f"{int(parts[0], 16):04x}"
    except ValueError:
        return bus
    return f"{domain}:{parts[1].rjust(2, '0')}:{parts[2]}"


def parse_devices(text: str) -> dict[str, int]:
    """Character device majors by driver name from /proc/devices."""
    out: dict[str, int] = {}
    in_char = False
    for line in text.splitlines():
        s = line.strip()
        if s == "Character devices:":
            in_char = True
            continue
        if s.endswith("devices:"):
            in_char = False
            continue
        if in_char and s:
            num, _, name = s.partition(" ")
            if num.isdigit() and name.strip():
                out.setdefault(name.strip(), int(num))
    return out


def char_majors(root: str) -> dict[str, int] | None:
    text = _read(root, "/proc/devices")
    return parse_devices(text) if text is not None else None


def parse_mig_minors(text: str) -> dict[str, int]:
    """{'gpu0/gi1/access': 12, 'gpu0/gi1/ci0/access': 13, 'config': 1, ...}"""
    out = {}
    for line in text.splitlines():
        name, _, num = line.strip().rpartition(" ")
        if name and num.isdigit():
            out[name] = int(num)
    return out


def mig_minors(root: str) -> dict[str, int]:
    text = _read(root, "/proc/driver/nvidia-caps/mig-minors")
    return parse_mig_minors(text) if text else {}


def _ints(names, prefix):
    out = []
    for n in names:
        if n.startswith(prefix) and n[len(prefix):].isdigit():
            out.append(int(n[len(prefix):]))
    return sorted(out)


def _listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []


def gpus(root: str) -> list[GpuRecord]:
    """GPUs from /proc/driver/nvidia/gpus, with MIG instances from the capabilities tree."""
    base = root.rstrip("/") + "/proc/driver/nvidia/gpus"
    out = []
    for bus in sorted(_listdir(base)):
        text = _read(root, f"/proc/driver/nvidia/gpus/{bus}/information")
        if text is None:
            continue
        info = parse_information(text)
        try:
            minor = int(info.get("Device Minor", ""))
        except ValueError:
            continue
        uuid = info.get("GPU UUID", "")
        if not uuid or uuid.startswith("?"):
            continue
        cap = root.rstrip("/") + f"/proc/driver/nvidia/capabilities/gpu{minor}/mig"
        migs = []
        for gi in _ints(_listdir(cap), "gi"):
            for ci in _ints(_listdir(f"{cap}/gi{gi}"), "ci"):
                migs.append((gi, ci, None))
        out.append(GpuRecord(minor=minor, uuid=uuid,
                             bus_id=normalize_bus_id(info.get("Bus Location", bus)),
                             model=info.get("Model", "unknown"), migs=tuple(migs)))
    return out


class ProcfsBackend:
    """GPU backend that needs no NVML: works on any root, real or simulated."""

    name = "procfs"

    def __init__(self, root: str):
        self.root = root

    def driver_version(self) -> str | None:
        return driver_version(self.root)

    def gpus(self) -> list[GpuRecord]:
        return gpus(self.root)

    def cuda_version(self) -> str | None:
        return None     # only the CUDA driver library or NVML can tell
