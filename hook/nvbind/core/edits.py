"""(Inventory, Grant) -> ContainerEdits: what a decided grant means on this host, as
plain data. nvbind.decide makes the decision; this only maps it onto the inventory.

Pure: no file system, no clock. The same input gives the same, sorted output.
"""

import os

from nvbind.errors import InputError, NvbindError
from nvbind.host.model import Gpu, Inventory, Mig
from nvbind.host.procfs import normalize_bus_id
from nvbind.core.grant import Grant
from nvbind.record import Record

RO = ("ro", "nosuid", "nodev", "bind")
RO_NOEXEC = ("ro", "nosuid", "nodev", "noexec", "bind")
RW_NOEXEC = ("nosuid", "nodev", "noexec", "bind")
HOOK_ENV = ("PATH=/usr/sbin:/usr/bin:/sbin:/bin",)
HOOK_TIMEOUT = 30
ENFORCED_ENV = ("CUDA_MPS_", "NVBIND_")     # the admin's policy, as nvbind.decide says

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
    """enforced: the admin's policy (CUDA_MPS_*, NVBIND_*): replaces the container's value."""
    __slots__ = ('name', 'value', 'reason', 'enforced')
    DEFAULTS = {"enforced": False}



class CgroupRule(Record):
    __slots__ = ('major', 'minor', 'access', 'reason', 'type')
    DEFAULTS = {"type": "c"}



class SymlinkEdit(Record):
    __slots__ = ('link', 'target', 'reason')



class HookEdit(Record):
    __slots__ = ('stage', 'path', 'args', 'env', 'timeout', 'reason')



class ContainerEdits(Record):
    __slots__ = ("devices", "mounts", "env", "cgroup", "symlinks", "ldcache_folders", "hooks",
                 "notes", "gpus", "leases", "isolation", "profile", "keys")
    DEFAULTS = {**{n: list for n in __slots__}, "isolation": "shared", "profile": "default"}
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


def select(inv: Inventory, req: Grant) -> list[Gpu | Mig]:
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


def _isolation(inv, grant, ed, selected) -> dict:
    """Leases for exclusive, MPS for virtual; returns extra env {name: (value, reason)}."""
    iso = grant.isolation
    ed.isolation = iso
    # lease keys (apply/leases.py): a slice is its parent GPU's UUID with the slice as suffix,
    # so that a GPU and its MIG slices share one key space; every GPU user checks them
    ed.keys = [f"{inv.gpus[m.gpu].uuid}:{m.gi}.{m.ci}" if isinstance(m, Mig) else m.uuid
               for m in selected]
    if iso == "exclusive":
        ed.leases = list(ed.keys)
        return {}
    if iso != "virtual":
        return {}
    mps = inv.mps or {}
    pipe, logd = mps.get("pipe_dir", "/tmp/nvidia-mps"), mps.get("log_dir", "/var/log/nvidia-mps")
    if not mps.get("running"):
        raise NvbindError(f"isolation 'virtual' needs a running CUDA MPS control daemon: no "
                          f"{pipe}/control on this host (start nvidia-cuda-mps-control -d)")
    host = (lambda p: inv.root.rstrip("/") + p) if inv.root != "/" else (lambda p: p)
    ed.mounts.append(MountEdit(host(pipe), pipe, RW_NOEXEC, "CUDA MPS pipe directory (virtual)"))
    env = {"CUDA_MPS_PIPE_DIRECTORY": (pipe, "CUDA (MPS client: where the server is)")}
    if mps.get("log_dir_present"):
        ed.mounts.append(MountEdit(host(logd), logd, RO_NOEXEC, "CUDA MPS log directory (virtual)"))
        env["CUDA_MPS_LOG_DIRECTORY"] = (logd, "CUDA (MPS client)")
    pct = grant.mps_thread_percentage
    if pct:
        env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = (str(pct), "CUDA MPS (share of SMs)")
    limit = grant.memory_limit
    if limit:
        mb = max(1, limit >> 20)
        env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] = (
            ",".join(f"{i}={mb}M" for i in range(len(selected))),
            "CUDA MPS (device memory limit per visible device)")
    return env


def compute(inv: Inventory, grant: Grant,
            hook_cmd: tuple[str, ...] | None = None, devices_only: bool = False) -> ContainerEdits:
    """The edits for one granted container. `hook_cmd` is (path, argv0, global args...) of
    nvbind, for the hooks the edits need (None: none). `devices_only`: stop once the device
    nodes and their cgroup rules are known (a CDI spec's per-device entries: the same
    decision, without building every mount again for each device)."""
    ed = ContainerEdits()
    req, profile = grant, grant.profile
    if inv.driver_version is None:
        raise InputError(f"{req.source} asks for GPUs but no NVIDIA driver was found on this "
                         "host" + (f" (root {inv.root})" if inv.root != "/" else ""))
    caps = set(grant.capabilities)
    selected = select(inv, req)
    ed.notes += list(grant.reasons)
    ed.profile = profile.name
    if req.requires:
        from nvbind.core import requirements
        parents = [inv.gpus[s.gpu] if isinstance(s, Mig) else s for s in selected]
        requirements.check(req.requires, {"cuda": inv.cuda_version, "driver": inv.driver_version},
                           parents)
        ed.notes.append(f"requirements met: {' ; '.join(req.requires)}")
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
            # The capability files (/proc/driver/nvidia/capabilities/...) need no mount: the
            # driver's procfs entries show in every container's own /proc, and runtimes
            # refuse mounts under /proc anyway.
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
    for what, wanted in (("config", req.mig_config), ("monitor", req.mig_monitor)):
        if wanted:
            if what not in inv.mig_mgmt:
                raise InputError(f"NVIDIA_MIG_{what.upper()}_DEVICES: this host has no MIG {what} capability")
            node_path, _proc = inv.mig_mgmt[what]
            want(node_path, f"MIG {what} (privileged container)")
    for path in profile.devices:
        want(path, f"profile {profile.name}")
    for path in sorted(nodes):
        n, why = nodes[path]
        ed.devices.append(DeviceEdit(path, n.major, n.minor, n.mode, why))
        ed.cgroup.append(CgroupRule(n.major, n.minor, "rw", f"allow {path}"))
    if devices_only:
        return ed

    folders = set()
    for f in inv.files_for(caps):
        ed.mounts.append(MountEdit(f.host_path, f.path, RO_NOEXEC if f.kind == "socket" else RO,
                                   f.reason))
        if f.kind == "library":
            d, base = os.path.split(f.path)
            folders.add(d)
            if f.soname and f.soname != base:
                ed.symlinks.append(SymlinkEdit(f"{d}/{f.soname}", base, f"soname of {base}"))
            if base.startswith("libcuda.so.") and f.soname:
                ed.symlinks.append(SymlinkEdit(f"{d}/libcuda.so", f.soname,
                                               "development link for programs linked with -lcuda"))
    for host_path, container_path, read_only in profile.mounts:
        src = inv.root.rstrip("/") + host_path if inv.root != "/" else host_path
        ed.mounts.append(MountEdit(src, container_path, RO if read_only else ("nosuid", "nodev", "bind"),
                                   f"profile {profile.name}"))
    env_extra = _isolation(inv, grant, ed, selected)
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
    env.update(env_extra)
    ed.env = [EnvEdit(k, v, why, k.startswith(ENFORCED_ENV)) for k, (v, why) in sorted(env.items())]

    # a shared or virtual GPU user registers itself (apply/leases.py) from this entry, whose
    # state names it (id, bundle, pid): an exclusive container arriving later sees it
    # (not from a CDI spec: static, one top-level entry for every device set)
    uses = ed.keys if ed.isolation != "exclusive" and grant.source != "CDI" else []
    if hook_cmd and (ed.ldcache_folders or ed.symlinks or uses):
        args = list(hook_cmd[1:]) + ["hook", "createContainer"]
        for key in uses:
            args += ["--use", key]
        if "compute" in caps:
            args += ["--driver-version", inv.driver_version]
        for d in ed.ldcache_folders:
            args += ["--folder", d]
        for s in ed.symlinks:
            args += ["--link", f"{s.target}::{s.link}"]
        ed.hooks.append(HookEdit("createContainer", hook_cmd[0], tuple(args), HOOK_ENV,
                                 HOOK_TIMEOUT, "create soname links and update the ld cache "
                                 "inside the container with the host's ldconfig"))
    if hook_cmd and ed.leases:
        # taken where the engine names the container (createRuntime's state has its id and
        # bundle; precreate runs in the caller's working directory and knows neither)
        args = list(hook_cmd[1:]) + ["hook", "createRuntime"]
        for key in ed.leases:
            args += ["--lease", key]
        ed.hooks.append(HookEdit("createRuntime", hook_cmd[0], tuple(args), HOOK_ENV,
                                 HOOK_TIMEOUT, "take the exclusive GPU lease"))
        ed.hooks.append(HookEdit("poststop", hook_cmd[0],
                                 tuple(list(hook_cmd[1:]) + ["hook", "poststop"]), HOOK_ENV,
                                 HOOK_TIMEOUT, "release the exclusive GPU lease"))
    return ed
