"""(Inventory, Request, Profile) -> ContainerEdits: the whole decision, as plain data.

Pure: no file system, no clock. The same input gives the same, sorted output.
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field

from nvbind.errors import InputError
from nvbind.host.model import Gpu, Inventory, Mig
from nvbind.host.procfs import normalize_bus_id
from nvbind.profiles import Profile
from nvbind.request import Request

RO = ("ro", "nosuid", "nodev", "bind")
RO_NOEXEC = ("ro", "nosuid", "nodev", "noexec", "bind")
RW_NOEXEC = ("nosuid", "nodev", "noexec", "bind")
HOOK_ENV = ("PATH=/usr/sbin:/usr/bin:/sbin:/bin",)
HOOK_TIMEOUT = 30

_PCI = re.compile(r"^(?:[0-9a-fA-F]{4,8}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")
_MIG_INDEX = re.compile(r"^(\d+):(\d+)$")


@dataclass(frozen=True)
class DeviceEdit:
    path: str
    major: int
    minor: int
    mode: int
    reason: str
    type: str = "c"


@dataclass(frozen=True)
class MountEdit:
    source: str
    destination: str
    options: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class EnvEdit:
    name: str
    value: str
    reason: str


@dataclass(frozen=True)
class CgroupRule:
    major: int
    minor: int
    access: str
    reason: str
    type: str = "c"


@dataclass(frozen=True)
class SymlinkEdit:
    link: str
    target: str
    reason: str


@dataclass(frozen=True)
class HookEdit:
    stage: str
    path: str
    args: tuple[str, ...]
    env: tuple[str, ...]
    timeout: int
    reason: str


@dataclass
class ContainerEdits:
    devices: list[DeviceEdit] = field(default_factory=list)
    mounts: list[MountEdit] = field(default_factory=list)
    env: list[EnvEdit] = field(default_factory=list)
    cgroup: list[CgroupRule] = field(default_factory=list)
    symlinks: list[SymlinkEdit] = field(default_factory=list)
    ldcache_folders: list[str] = field(default_factory=list)
    hooks: list[HookEdit] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    gpus: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.devices or self.mounts or self.env or self.hooks)

    def to_json(self) -> dict:
        return asdict(self)


def _describe(inv: Inventory) -> str:
    if not inv.gpus:
        return "this host has no GPU"
    parts = []
    for g in inv.gpus:
        parts.append(f"{g.index} ({g.uuid}, {g.bus_id})")
        parts += [f"{g.index}:{m.index}" + (f" ({m.uuid})" if m.uuid else "") for m in g.migs]
    return "this host has: " + ", ".join(parts)


def select(inv: Inventory, req: Request) -> list[Gpu | Mig]:
    """The GPUs and MIG devices a request names, in request order, without repeats."""
    if req.devices == "all":
        return list(inv.gpus)
    out: list[Gpu | Mig] = []
    for sel in req.devices:
        hit = _match(inv, sel)
        if hit is None:
            raise InputError(f"unknown device '{sel}' in {req.source}; {_describe(inv)}")
        if hit not in out:
            out.append(hit)
    return out


def _match(inv: Inventory, sel: str):
    if sel.isdigit():
        i = int(sel)
        return inv.gpus[i] if i < len(inv.gpus) else None
    m = _MIG_INDEX.match(sel)
    if m:
        gi, mi = int(m.group(1)), int(m.group(2))
        if gi < len(inv.gpus) and mi < len(inv.gpus[gi].migs):
            return inv.gpus[gi].migs[mi]
        return None
    low = sel.lower()
    if low.startswith("gpu-"):
        return next((g for g in inv.gpus if g.uuid.lower() == low), None)
    if low.startswith("mig-"):
        return next((m for g in inv.gpus for m in g.migs if m.uuid and m.uuid.lower() == low), None)
    if _PCI.match(sel):
        bus = normalize_bus_id(sel)
        return next((g for g in inv.gpus if g.bus_id == bus), None)
    return None


def compute(inv: Inventory, req: Request, profile: Profile,
            hook_cmd: tuple[str, ...] | None = None) -> ContainerEdits:
    """The edits for one container. `hook_cmd` is (path, argv0, global args...) of nvbind."""
    ed = ContainerEdits()
    if req.empty:
        ed.notes.append("no GPU requested: container left unchanged")
        return ed
    if inv.driver_version is None:
        raise InputError(f"{req.source} asks for GPUs but no NVIDIA driver was found on this host")
    caps = set(profile.capabilities or req.capabilities)
    selected = select(inv, req)
    ed.notes += list(req.reasons)
    nodes: dict[str, tuple] = {}

    def want(path, why):
        n = inv.nodes.get(path)
        if n is None:
            ed.notes.append(f"{path}: not on this host ({why})")
        else:
            nodes[path] = (n, f"{why}: {n.reason}")

    want("/dev/nvidiactl", "driver control")
    if "compute" in caps:
        want("/dev/nvidia-uvm", "compute capability")
        want("/dev/nvidia-uvm-tools", "compute capability")
    if caps & {"graphics", "display"}:
        want("/dev/nvidia-modeset", "graphics/display capability")
    for item in selected:
        if isinstance(item, Mig):
            gpu = inv.gpus[item.gpu]
            ed.gpus.append(item.uuid or f"{gpu.index}:{item.index}")
            label = f"MIG {gpu.index}:{item.index} (GI {item.gi}, CI {item.ci})"
            for c in item.caps:
                want(c, f"{label} access")
        else:
            gpu = item
            ed.gpus.append(gpu.uuid)
            label = f"GPU {gpu.index} ({gpu.uuid}, {gpu.bus_id})"
        if gpu.node:
            want(gpu.node, f"requested {label}")
        else:
            raise InputError(f"{label} has no usable device node /dev/nvidia{gpu.minor} on this host")
        if caps & {"graphics", "display"}:
            for d in gpu.drm:
                want(d, f"DRM node of {label}")
    for path in sorted(nodes):
        n, why = nodes[path]
        ed.devices.append(DeviceEdit(path, n.major, n.minor, n.mode, why))
        ed.cgroup.append(CgroupRule(n.major, n.minor, "rw", f"allow {path}"))

    folders = set()
    for f in inv.files_for(caps):
        if f.kind == "socket":
            opts = RW_NOEXEC if f.path == "/tmp/nvidia-mps" else RO_NOEXEC
        else:
            opts = RO
        ed.mounts.append(MountEdit(f.host_path, f.path, opts, f.reason))
        if f.kind == "library":
            d, base = os.path.split(f.path)
            folders.add(d)
            if f.soname and f.soname != base:
                ed.symlinks.append(SymlinkEdit(f"{d}/{f.soname}", base, f"soname of {base}"))
            if base.startswith("libcuda.so.") and f.soname:
                ed.symlinks.append(SymlinkEdit(f"{d}/libcuda.so", f.soname,
                                               "development link for programs linked with -lcuda"))
    ed.mounts.sort(key=lambda m: (m.destination, m.source))
    ed.symlinks.sort(key=lambda s: s.link)
    ed.ldcache_folders = sorted(folders)

    env = {
        "NVBIND_GPUS": (",".join(ed.gpus), "nvbind marker: the GPUs given to this container"),
        "NVBIND_CAPABILITIES": (",".join(sorted(caps)), "nvbind marker: driver capabilities given"),
        "NVBIND_PROFILE": (profile.name, "nvbind marker: the profile applied"),
    }
    for name, value, reader in profile.env:
        env[name] = (value, f"profile {profile.name}: read by {reader}")
    ed.env = [EnvEdit(k, v, why) for k, (v, why) in sorted(env.items())]

    if hook_cmd and (ed.ldcache_folders or ed.symlinks):
        args = list(hook_cmd[1:]) + ["hook", "createContainer"]
        for d in ed.ldcache_folders:
            args += ["--folder", d]
        for s in ed.symlinks:
            args += ["--link", f"{s.target}::{s.link}"]
        ed.hooks.append(HookEdit("createContainer", hook_cmd[0], tuple(args), HOOK_ENV,
                                 HOOK_TIMEOUT, "create soname links and update the ld cache "
                                 "inside the container with the host's ldconfig"))
    return ed
