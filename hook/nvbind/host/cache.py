"""The host inventory cache (default /run/nvbind/inventory.json; $XDG_RUNTIME_DIR/nvbind for a
non-root user, see settings.user_runtime_dir).

Hooks must not rediscover the host (or ever call NVML) per container. The cache holds
the full inventory and a fingerprint of what it was built from: the driver version,
the /dev/nvidia* nodes (names and device numbers), the boot id, the ld.so.cache's
size and mtime, and the sockets, firmware and loader directories in WATCH. Any change
makes it stale; a file gone since is never mounted (inventory.cached drops it). It decides what gets mounted into containers,
so it is trusted only when it is ours: owned by this user, not writable by group or
others, in a directory that is not either, of our format, with the fingerprint matching.
Anything else is ignored and rebuilt (by procfs on a hook path; `nvbind info --refresh`
rebuilds it with NVML, which adds MIG UUIDs, compute capability, brand and CUDA version).
Written atomically (temp file + rename).
"""

import os
import stat

from nvbind import fastjson
from nvbind.host import procfs
from nvbind.host.model import File, Gpu, Inventory, Mig, Node

FORMAT = "nvbind-inventory-3"   # 2: compat32:<base>, binaries at /usr/bin; 3: X snippets
NAME = "inventory.json"


def _name(root: str) -> str:
    """inventory.json for the real host; one file per other root (simulated, /host)."""
    if root == "/":
        return NAME
    h = 0xCBF29CE484222325          # FNV-1a, 64 bit: stable across runs, no import
    for b in os.fsencode(root):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"inventory-{h:016x}.json"


# What may come and go while the driver stays: daemons' sockets, firmware, the loaders'
# configuration directories (a directory's mtime changes when an entry is added or removed).
WATCH = ("/run/nvidia-persistenced/socket", "/run/nvidia-fabricmanager/socket",
         "/lib/firmware/nvidia", "/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d",
         "/usr/share/vulkan/implicit_layer.d", "/usr/share/glvnd/egl_vendor.d",
         "/etc/glvnd/egl_vendor.d", "/usr/share/egl/egl_external_platform.d", "/etc/OpenCL/vendors",
         "/usr/share/nvidia", "/usr/bin")


def _watched(r: str, driver: str | None) -> list:
    out = []
    for p in WATCH + ((f"/lib/firmware/nvidia/{driver}",) if driver else ()):
        try:
            st = os.lstat(r + p)
            out.append([p, st.st_ino, st.st_mtime_ns])
        except OSError:
            out.append([p, None, None])
    return out


def fingerprint(root: str) -> dict:
    r = root.rstrip("/")
    nodes = []
    for d in ("/dev", "/dev/nvidia-caps"):
        try:
            names = os.listdir(r + d)
        except OSError:
            continue
        for n in sorted(names):
            if d == "/dev" and not n.startswith("nvidia"):
                continue
            try:
                st = os.lstat(f"{r}{d}/{n}")
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode):
                nodes.append([f"{d}/{n}", st.st_rdev, stat.S_IMODE(st.st_mode)])
    try:
        st = os.stat(r + "/etc/ld.so.cache")
        ldc = [st.st_size, st.st_mtime_ns]
    except OSError:
        ldc = None
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = None
    driver = procfs.driver_version(root)
    return {"root": root, "driver": driver, "nodes": nodes, "boot_id": boot,
            "ldcache": ldc, "watch": _watched(r, driver)}


def load(cache_dir: str, fp: dict) -> Inventory | None:
    from nvbind.sysio import trust     # owner and mode of file and directory (one rule)
    data = trust.open_trusted(os.path.join(cache_dir, _name(fp["root"])))
    if data is None:
        return None
    try:
        doc = fastjson.loads(data.decode(), own=True)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("fingerprint") != fp:
            return None
        return from_json(doc["inventory"])
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        return None


def store(cache_dir: str, inv: Inventory, fp: dict) -> str | None:
    """Write the cache (temp file O_EXCL|O_NOFOLLOW + rename); returns why it could not be
    written, or None."""
    from nvbind.sysio import atomic, trust
    try:
        os.makedirs(cache_dir, mode=0o755, exist_ok=True)
        why = trust.untrusted_dir(cache_dir)
        if why:
            return f"cannot write the inventory cache in {cache_dir}: {why}"
        atomic.write(os.path.join(cache_dir, _name(fp["root"])),
                     fastjson.dumps({"format": FORMAT, "fingerprint": fp,
                                     "inventory": inv.to_json()}), 0o644)
        return None
    except (OSError, ValueError) as e:
        return f"cannot write the inventory cache in {cache_dir}: {getattr(e, 'strerror', None) or e}"


def from_json(d: dict) -> Inventory:
    gpus = []
    for g in d["gpus"]:
        migs = tuple(Mig(m["gpu"], m["index"], m["gi"], m["ci"], m["uuid"], tuple(m["caps"]),
                         tuple(m.get("procs", ()))) for m in g["migs"])
        gpus.append(Gpu(g["index"], g["minor"], g["uuid"], g["bus_id"], g["model"], g["node"],
                        tuple(g["drm"]), migs, g.get("arch"), g.get("brand")))
    nodes = {n["path"]: Node(n["path"], n["host_path"], n["major"], n["minor"], n["mode"], n["reason"])
             for n in d["nodes"]}
    files = [File(f["kind"], f["capability"], f["path"], f["host_path"], f["reason"], f["soname"])
             for f in d["files"]]
    return Inventory(root=d["root"], backend=d["backend"], driver_version=d["driver_version"],
                     gpus=gpus, nodes=nodes, files=files,
                     skipped=[(s["item"], s["reason"]) for s in d["skipped"]],
                     notes=list(d["notes"]), cuda_version=d.get("cuda_version"),
                     mig_mgmt={k: list(v) for k, v in (d.get("mig_mgmt") or {}).items()}, mps={})
