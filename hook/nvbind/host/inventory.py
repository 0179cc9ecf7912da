"""Build the Inventory of a host root from a GPU backend, /dev and the driver's files."""

import os

from nvbind.host import procfs
from nvbind.host.model import Gpu, Inventory, Mig

CONTROL_NODES = (
    ("/dev/nvidiactl", "nvidia", "driver control node"),
    ("/dev/nvidia-uvm", "nvidia-uvm", "unified memory (CUDA)"),
    ("/dev/nvidia-uvm-tools", "nvidia-uvm", "unified memory tools (CUDA profilers)"),
    ("/dev/nvidia-modeset", "nvidia", "modeset (display, graphics)"),
)


def backend_for(root: str, prefer: str = "auto"):
    """NVML on the real host when it works, else procfs. Never used on a hook path."""
    if prefer in ("auto", "nvml") and root in ("", "/"):
        try:
            from nvbind.host.nvml import NvmlBackend  # noqa: PLC0415
            return NvmlBackend(), None
        except Exception as e:  # noqa: BLE001 - any NVML failure means: use procfs
            if prefer == "nvml":
                raise
            return procfs.ProcfsBackend(root), f"NVML unavailable ({type(e).__name__}: {e}); used procfs"
    return procfs.ProcfsBackend(root), None


def build(root: str = "/", backend=None, arch: str | None = None,
          driver_version: str | None = None, capabilities=None,
          mps_pipe_dir: str = "/tmp/nvidia-mps", mps_log_dir: str = "/var/log/nvidia-mps",
          extra_devices=()) -> Inventory:
    """Everything the host has; driver files only for `capabilities` (the hook asks for
    what the container wants, `info` for all)."""
    from nvbind.host import discover
    from nvbind.host.discover import nodes as devices
    root = os.path.abspath(root) if root not in ("", "/") else "/"
    capabilities = discover.CAPABILITIES if capabilities is None else capabilities
    if backend is None:
        backend = procfs.ProcfsBackend(root)
    arch = arch or discover.machine_arch()
    version = driver_version or backend.driver_version()
    inv = Inventory(root=root, backend=backend.name, driver_version=version,
                    cuda_version=getattr(backend, "cuda_version", lambda: None)())
    skipped = inv.skipped
    majors = procfs.char_majors(root)
    if majors is None:
        inv.notes.append("no /proc/devices under the root: device majors are not checked")
    for path, owner, why in CONTROL_NODES:
        node = devices.probe(root, path, owner, majors, skipped, why)
        if node:
            inv.nodes[path] = node
    records = sorted(backend.gpus(), key=lambda r: r.bus_id)
    mig_minors = procfs.mig_minors(root) if any(r.migs for r in records) else {}
    if any(r.migs for r in records):
        for what in ("config", "monitor"):     # MIG management, for privileged containers
            minor = mig_minors.get(what)
            path = f"/dev/nvidia-caps/nvidia-cap{minor}"
            proc = f"/proc/driver/nvidia/capabilities/mig/{what}"
            node = minor is not None and devices.probe(root, path, "nvidia-caps", majors, skipped,
                                                       f"MIG {what} capability")
            if node and os.path.exists(root.rstrip("/") + proc):
                inv.nodes[path] = node
                inv.mig_mgmt[what] = [path, proc]
    for index, rec in enumerate(records):
        path = f"/dev/nvidia{rec.minor}"
        node = devices.probe(root, path, "nvidia", majors, skipped, f"GPU {index} ({rec.uuid})")
        if node:
            inv.nodes[path] = node
        drm = devices.drm_nodes(root, rec.bus_id, majors, skipped)
        for d in drm:
            inv.nodes[d.path] = d
        migs = []
        for mindex, (gi, ci, uuid) in enumerate(rec.migs):
            caps = []
            for key in (f"gpu{rec.minor}/gi{gi}/access", f"gpu{rec.minor}/gi{gi}/ci{ci}/access"):
                minor = mig_minors.get(key)
                if minor is None:
                    skipped.append((key, "no minor in /proc/driver/nvidia-caps/mig-minors"))
                    continue
                cpath = f"/dev/nvidia-caps/nvidia-cap{minor}"
                cnode = devices.probe(root, cpath, "nvidia-caps", majors, skipped,
                                      f"MIG {index}:{mindex} access ({key})")
                if cnode:
                    inv.nodes[cpath] = cnode
                    caps.append(cpath)
            base = f"/proc/driver/nvidia/capabilities/gpu{rec.minor}/mig/gi{gi}"
            procs = tuple(p for p in (f"{base}/access", f"{base}/ci{ci}/access")
                          if os.path.exists(root.rstrip("/") + p))
            migs.append(Mig(gpu=index, index=mindex, gi=gi, ci=ci, uuid=uuid, caps=tuple(caps),
                            procs=procs))
        inv.gpus.append(Gpu(index=index, minor=rec.minor, uuid=rec.uuid, bus_id=rec.bus_id,
                            model=rec.model, node=path if node else None,
                            drm=tuple(d.path for d in drm), migs=tuple(migs),
                            arch=rec.arch, brand=rec.brand))
    add_dynamic(inv, mps_pipe_dir, mps_log_dir, extra_devices)
    if version is None:
        inv.notes.append("no NVIDIA driver found (no /proc/driver/nvidia/version)")
    else:
        inv.files = discover.discover(root, version, arch, capabilities, skipped)
    return inv


def add_dynamic(inv: Inventory, mps_pipe_dir: str, mps_log_dir: str, extra_devices=()) -> None:
    """What may change between containers and is never cached: MPS state, a profile's
    extra device nodes."""
    r = inv.root.rstrip("/")
    if extra_devices:
        from nvbind.host.discover import nodes as devices
    for path in extra_devices:
        node = devices.probe(inv.root, path, None, None, inv.skipped, "asked for by the profile")
        if node:
            inv.nodes[path] = node
    inv.mps = {"pipe_dir": mps_pipe_dir, "log_dir": mps_log_dir,
               "running": os.path.exists(r + mps_pipe_dir + "/control"),
               "log_dir_present": os.path.isdir(r + mps_log_dir)}


def cached(root: str, cache_dir: str | None, mps_pipe_dir: str = "/tmp/nvidia-mps",
           mps_log_dir: str = "/var/log/nvidia-mps", extra_devices=()) -> Inventory:
    """The inventory for a hook: from the cache when it is fresh and ours, else built
    with procfs (never NVML) and cached for the next container."""
    from nvbind.host import cache
    root = os.path.abspath(root) if root not in ("", "/") else "/"
    inv = None
    if cache_dir:
        fp = cache.fingerprint(root)
        inv = cache.load(cache_dir, fp)
        if inv is not None:
            gone = [f for f in inv.files if not os.path.lexists(f.host_path)]
            if gone:    # never a mount whose source is gone (runc would fail the container)
                inv.files = [f for f in inv.files if f not in gone]
                inv.skipped += [(f.path, "gone since the inventory was cached") for f in gone]
    if inv is None:
        inv = build(root)
        if cache_dir:
            why = cache.store(cache_dir, inv, fp)
            if why:
                inv.notes.append(why)
    add_dynamic(inv, mps_pipe_dir, mps_log_dir, extra_devices)
    return inv


def refresh(root: str, cache_dir: str, prefer: str = "auto") -> Inventory:
    """`nvbind info --refresh`: rebuild with the best backend (NVML on a real host)."""
    from nvbind.host import cache
    root = os.path.abspath(root) if root not in ("", "/") else "/"
    backend, note = backend_for(root, prefer)
    try:
        inv = build(root, backend)
    finally:
        getattr(backend, "close", lambda: None)()
    if note:
        inv.notes.insert(0, note)
    why = cache.store(cache_dir, inv, cache.fingerprint(root))
    if why:
        inv.notes.append(why)
    return inv
