"""(Inventory, Request, Profile) -> ContainerEdits: the whole decision, as plain data.

Pure: no file system, no clock. The same input gives the same, sorted output.
"""
from __future__ import annotations

import os

from nvbind.errors import InputError
from nvbind.host.model import Gpu, Inventory, Mig
from nvbind.host.procfs import normalize_bus_id
from nvbind.profiles import Profile
from nvbind.record import Record
from nvbind.request import Request

RO = ("ro", "nosuid", "nodev", "bind")
RO_NOEXEC = ("ro", "nosuid", "nodev", "noexec", "bind")
RW_NOEXEC = ("nosuid", "nodev", "noexec", "bind")
HOOK_ENV = ("PATH=/usr/sbin:/usr/bin:/sbin:/bin",)
HOOK_TIMEOUT = 30

_HEX = frozenset("0123456789abcdefABCDEF")


def _is_pci(sel: str) -> bool:
    """[domain:]bus:device.function, as NVIDIA_VISIBLE_DEVICES accepts PCI bus ids."""
    parts = sel.split(":")
    if len(parts) == 3:
        if not (4 <= len(parts[0]) <= 8 and set(parts[0]) <= _HEX):
            return False
    elif len(parts) != 2:
        return False
    dev, dot, fn = parts[-1].partition(".")
    bus = parts[-2]
    return (len(bus) == 2 and set(bus) <= _HEX and len(dev) == 2 and set(dev) <= _HEX
            and dot == "." and len(fn) == 1 and fn in "01234567")


def _mig_index(sel: str):
    gpu, sep, mig = sel.partition(":")
    return (int(gpu), int(mig)) if sep and gpu.isdigit() and mig.isdigit() else None


class DeviceEdit(Record):
    __slots__ = ('path', 'major', 'minor', 'mode', 'reason', 'type')
    DEFAULTS = {"type": "c"}



class MountEdit(Record):
    __slots__ = ('source', 'destination', 'options', 'reason')



class EnvEdit(Record):
    __slots__ = ('name', 'value', 'reason')



class CgroupRule(Record):
    __slots__ = ('major', 'minor', 'access', 'reason', 'type')
    DEFAULTS = {"type": "c"}



class SymlinkEdit(Record):
    __slots__ = ('link', 'target', 'reason')



class HookEdit(Record):
    __slots__ = ('stage', 'path', 'args', 'env', 'timeout', 'reason')



class ContainerEdits(Record):
    __slots__ = ("devices", "mounts", "env", "cgroup", "symlinks", "ldcache_folders", "hooks",
                 "notes", "gpus")
    DEFAULTS = {n: list for n in __slots__}
    FROZEN = False

    @property
    def empty(self) -> bool:
        return not (self.devices or self.mounts or self.env or self.hooks)



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
    m = _mig_index(sel)
    if m:
        gi, mi = m
        if gi < len(inv.gpus) and mi < len(inv.gpus[gi].migs):
            return inv.gpus[gi].migs[mi]
        return None
    low = sel.lower()
    if low.startswith("gpu-"):
        return next((g for g in inv.gpus if g.uuid.lower() == low), None)
    if low.startswith("mig-"):
        return next((m for g in inv.gpus for m in g.migs if m.uuid and m.uuid.lower() == low), None)
    if _is_pci(sel):
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
