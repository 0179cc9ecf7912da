"""`nvbind doctor`: what nvbind sees on this host, each check pass / warn / fail with a fix.

Every check reads paths under the host root, so a simulated host (`--root`) exercises them
all. Exit status: 0 when all pass, 1 when the worst is a warning, 3 when something fails
(2 stays "bad input", as for every verb).
"""

import json
import os
import shutil

from nvbind.host import cache

PASS, WARN, FAIL = "pass", "warn", "fail"
RANK = {PASS: 0, WARN: 1, FAIL: 3}


def _check(name, status, detail, fix=""):
    return {"check": name, "status": status, "detail": detail, "fix": fix}


def run(root: str, settings: dict, cache_dir: str | None, log_path: str | None,
        nvml=None) -> list[dict]:
    from nvbind.host import inventory
    r = root.rstrip("/") if root != "/" else ""
    out = []
    inv = inventory.build(root, mps_pipe_dir=settings["mps_pipe_dir"], mps_log_dir=settings["mps_log_dir"])
    v = inv.driver_version
    # driver
    if v is None:
        out.append(_check("driver", FAIL, "no /proc/driver/nvidia/version: the kernel module is not loaded",
                          "install the NVIDIA driver, or `modprobe nvidia`"))
    else:
        out.append(_check("driver", PASS, f"kernel module {v}"))
        libs = [f for f in inv.files if f.kind == "library" and f.capability in ("compute", "utility")]
        if not any(f.path.endswith(f"libcuda.so.{v}") for f in libs):
            out.append(_check("driver libraries", FAIL, f"no libcuda.so.{v} matching the kernel module",
                              "install the user-space driver of the same version as the kernel module"))
        else:
            stale = [i for i, why in inv.skipped if "names version" in why]
            out.append(_check("driver libraries", WARN if stale else PASS,
                              f"{len(libs)} compute/utility libraries of version {v}"
                              + (f"; ld.so.cache also names other versions ({len(stale)})" if stale else ""),
                              "run ldconfig after removing the old driver's libraries" if stale else ""))
        if nvml is not None:
            nv = nvml.driver_version()
            out.append(_check("NVML version", PASS if nv == v else FAIL,
                              f"NVML reports {nv}, the kernel module {v}",
                              "" if nv == v else "reboot or reload the module after a driver update"))
    # persistence
    pm = None
    if nvml is not None and hasattr(nvml, "persistence"):
        pm = nvml.persistence()
    sock = os.path.exists(r + "/run/nvidia-persistenced/socket")
    if pm is False or (pm is None and not sock):
        out.append(_check("persistence", WARN, "persistence mode off and no nvidia-persistenced socket: "
                          "every NVML initialisation can take seconds",
                          "systemctl enable --now nvidia-persistenced"))
    else:
        out.append(_check("persistence", PASS, "nvidia-persistenced is running" if sock else "persistence mode on"))
    # device nodes
    missing = [f"/dev/nvidia{g.minor}" for g in inv.gpus if g.node is None]
    ctl = "/dev/nvidiactl" in inv.nodes
    bad = [f"{i}: {why}" for i, why in inv.skipped if i.startswith("/dev/") and "not present" not in why]
    if not inv.gpus:
        out.append(_check("device nodes", FAIL if v else WARN, "no GPU found",
                          "check `nvidia-smi`; the driver sees no GPU"))
    elif missing or not ctl or bad:
        out.append(_check("device nodes", FAIL, "; ".join(
            (["/dev/nvidiactl missing"] if not ctl else []) + [f"{m} missing" for m in missing] + bad),
            "run `nvidia-modprobe -c0 -u` (or nvidia-smi once) to create the nodes"))
    else:
        out.append(_check("device nodes", PASS, f"{len(inv.gpus)} GPU(s), {len(inv.nodes)} nodes, "
                          "majors match /proc/devices"))
    # ld cache
    try:
        from nvbind.host import discover, ldcache
        with open(r + "/etc/ld.so.cache", "rb") as f:
            entries = ldcache.for_arch(ldcache.parse(f.read(64 << 20)), discover.machine_arch())
        has = any(n == "libcuda.so.1" for n, _ in entries)
        out.append(_check("ld cache", PASS if has else WARN, f"{len(entries)} entries"
                          + ("" if has else "; no libcuda.so.1 (nvbind falls back to a directory scan)"),
                          "" if has else "run ldconfig"))
    except (OSError, ValueError) as e:
        out.append(_check("ld cache", WARN, f"/etc/ld.so.cache unusable ({e}); directory scan used",
                          "run ldconfig"))
    # engines
    out += _engines(root, r)
    # cgroups and kernel features for the live path
    out.append(_cgroup(r))
    # MPS
    mps = inv.mps
    out.append(_check("MPS (isolation virtual)", PASS if mps.get("running") else WARN,
                      f"control daemon {'running' if mps.get('running') else 'not running'} "
                      f"({mps.get('pipe_dir')}/control)",
                      "" if mps.get("running") else "nvidia-cuda-mps-control -d (only needed for 'virtual')"))
    # leases
    ldir = settings["lease_dir"]
    if not ldir:        # not root and no runtime directory of its own (settings._defaults)
        from nvbind.settings import user_runtime_dir
        out.append(_check("lease directory", WARN, f"none: {user_runtime_dir()[1]}; exclusive "
                          "requests are refused", "set XDG_RUNTIME_DIR, or lease_dir in the configuration"))
    elif os.path.isdir(ldir):
        stale = []
        for n in os.listdir(ldir):
            if n.endswith(".lease"):
                try:
                    with open(os.path.join(ldir, n)) as f:
                        holder = json.load(f)
                    if not os.path.isdir(holder.get("bundle", "")):
                        stale.append(n)
                except (OSError, ValueError):
                    stale.append(n)
        w = os.access(ldir, os.W_OK)
        out.append(_check("lease directory", PASS if w and not stale else WARN,
                          f"{ldir}: {'writable' if w else 'not writable'}, {len(stale)} stale lease(s)",
                          "stale leases are reclaimed on the next exclusive create" if stale else ""))
    else:
        parent = os.path.dirname(ldir.rstrip("/")) or "/"
        ok = os.access(parent if os.path.isdir(parent) else "/", os.W_OK)
        out.append(_check("lease directory", PASS if ok else WARN, f"{ldir} will be created on first use",
                          "" if ok else f"make {parent} writable for nvbind"))
    # log
    if log_path:
        d = os.path.dirname(log_path) or "."
        ok = os.access(log_path, os.W_OK) if os.path.exists(log_path) else os.access(d, os.W_OK)
        out.append(_check("log file", PASS if ok else FAIL, f"{log_path} {'writable' if ok else 'not writable'}",
                          "" if ok else f"create {d} or set log_file / NVBIND_LOG"))
    else:
        out.append(_check("log file", WARN, "logging is off: failed hooks leave no trace",
                          "set log_file in the configuration"))
    # inventory cache
    if cache_dir:
        fp = cache.fingerprint(root if root == "/" else os.path.abspath(root))
        fresh = cache.load(cache_dir, fp) is not None
        out.append(_check("inventory cache", PASS if fresh else WARN,
                          f"{os.path.join(cache_dir, cache._name(fp['root']))}: {'fresh' if fresh else 'missing or stale'}",
                          "" if fresh else "nvbind info --refresh (the next hook rebuilds it anyway)"))
    return out


def _engines(root: str, r: str) -> list[dict]:
    out = []
    hook_dirs = ["/usr/share/containers/oci/hooks.d", "/etc/containers/oci/hooks.d",
                 "/usr/local/lib/nvbind/hooks.d"]
    hooks = []
    for d in hook_dirs:
        try:
            names = os.listdir(r + d)
        except OSError:
            continue
        for n in names:
            if n.endswith(".json"):
                try:
                    with open(f"{r}{d}/{n}") as f:
                        h = json.load(f)
                    args = h.get("hook", {}).get("args", [])
                    if "hook" in args and os.path.basename(h.get("hook", {}).get("path", "")) == "nvbind":
                        hooks.append((f"{d}/{n}", h))
                except (OSError, ValueError, AttributeError):
                    continue
    for engine, binary in (("podman", "podman"), ("CRI-O", "crio"), ("docker", "dockerd"),
                           ("containerd", "containerd")):
        found = shutil.which(binary, path=":".join(r + p for p in ("/usr/bin", "/usr/sbin", "/usr/local/bin")))
        if engine in ("podman", "CRI-O"):
            stages = sorted({s for _, h in hooks for s in h.get("stages", [])})
            ok = bool(hooks) and (engine == "podman" or any(s != "precreate" for s in stages))
            detail = (f"{'found' if found else 'not installed'}; nvbind hooks.d: "
                      + (", ".join(p for p, _ in hooks) or "none"))
            bad_env = [p for p, h in hooks if not h.get("hook", {}).get("env")]
            if bad_env:
                out.append(_check(engine, FAIL, detail + f"; entries without env: {', '.join(bad_env)}",
                                  "every hook entry needs an explicit env (CVE-2025-23266)"))
                continue
            # buildah reads these two whatever containers.conf says, and fails on precreate
            breaks = [p for p, h in hooks if "precreate" in (h.get("stages") or [])
                      and os.path.dirname(p) in hook_dirs[:2]]
            if engine == "podman" and breaks:
                out.append(_check(engine, FAIL, detail + f"; precreate where buildah reads it: "
                                  f"{', '.join(breaks)} (every buildah run / podman build fails)",
                                  "remove it and run nvbind install --engine podman"))
                continue
            status = PASS if ok else (WARN if found else PASS)
            out.append(_check(engine, status, detail, "" if ok or not found else
                              f"nvbind install --engine {'podman' if engine == 'podman' else 'crio'}"))
        elif engine == "docker":
            try:
                with open(r + "/etc/docker/daemon.json") as f:
                    reg = "nvbind" in (json.load(f).get("runtimes") or {})
            except (OSError, ValueError, AttributeError):
                reg = False
            out.append(_check(engine, PASS if reg or not found else WARN,
                              f"{'found' if found else 'not installed'}; runtime nvbind "
                              f"{'registered' if reg else 'not registered'}",
                              "" if reg or not found else "nvbind install --engine docker"))
        else:
            reg, why = _containerd(found, r)
            out.append(_check(engine, PASS if reg or not found else WARN,
                              f"{'found' if found else 'not installed'}; runtime nvbind "
                              f"{'registered' if reg else 'not registered'}"
                              + (f" ({why})" if found else ""),
                              "" if reg or not found else "nvbind install --engine containerd"))
    out.append(_cdi(root, r))
    return out


def _containerd(binary: str | None, r: str) -> tuple[bool, str]:
    """What containerd itself has in force: `containerd config dump` merges config.toml,
    its imports and the built-in defaults (a file on disk proves nothing)."""
    if not binary:
        return False, "not installed"
    import subprocess
    from nvbind.admin import containerd_config
    try:
        p = subprocess.run([binary, "--config", r + "/etc/containerd/config.toml", "config", "dump"],
                           capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"containerd config dump failed: {e}"
    if p.returncode != 0:
        return False, "containerd config dump failed: " + " ".join(p.stderr.split())[:200]
    return containerd_config.registered(p.stdout)


def _cdi(root: str, r: str) -> dict:
    specs = []
    for d in ("/etc/cdi", "/var/run/cdi"):
        try:
            for n in sorted(os.listdir(r + d)):
                if n.endswith(".json"):
                    specs.append(f"{d}/{n}")
        except OSError:
            continue
    ours = []
    for p in specs:
        try:
            with open(r + p) as f:
                spec = json.load(f)
        except (OSError, ValueError):
            continue
        if spec.get("kind") == "nvidia.com/gpu":
            ours.append((p, spec))
    if not ours:
        return _check("CDI spec", WARN, "no nvidia.com/gpu spec in /etc/cdi or /var/run/cdi",
                      "nvbind cdi generate --output /var/run/cdi/nvidia.json (needed for --device nvidia.com/gpu=N)")
    stale = []
    for p, spec in ours:
        for m in (spec.get("containerEdits") or {}).get("mounts") or []:
            # CDI host paths are the host's (never carry the --root prefix): look under root
            if not os.path.exists(r + m.get("hostPath", "")):
                stale.append(p)
                break
    return _check("CDI spec", WARN if stale else PASS,
                  ", ".join(p for p, _ in ours) + ("; stale (names files that no longer exist): "
                                                    + ", ".join(stale) if stale else ""),
                  "nvbind cdi generate --output <the same file>" if stale else "")


def _cgroup(r: str) -> dict:
    unified = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    v1_devices = os.path.isdir("/sys/fs/cgroup/devices")
    import errno
    try:
        from nvbind.sysio import syscalls as nsys
        os.close(nsys.open_tree(-100, "/", nsys.OPEN_TREE_CLOEXEC))
        newmount = True
    except OSError as e:
        newmount = e.errno != errno.ENOSYS
    if unified:
        mode = "v2 (device rules through BPF programs)"
    elif v1_devices:
        mode = "v1 devices controller"
    else:
        return _check("cgroups / live injection", FAIL, "no device cgroup found",
                      "mount the cgroup v1 devices controller or cgroup2 on /sys/fs/cgroup")
    return _check("cgroups / live injection", PASS if newmount else FAIL,
                  f"{mode}; open_tree/move_mount {'available' if newmount else 'missing (kernel < 5.2)'}",
                  "" if newmount else "use precreate, the runtime shim or CDI on this kernel")


def worst(checks: list[dict]) -> int:
    return max((RANK[c["status"]] for c in checks), default=0)


def render(checks: list[dict]) -> str:
    width = max(len(c["check"]) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"[{c['status'].upper():4}] {c['check']:<{width}}  {c['detail']}")
        if c["fix"] and c["status"] != PASS:
            lines.append(f"       {'':<{width}}  fix: {c['fix']}")
    return "\n".join(lines)


def main(settings, ns) -> int:
    """`nvbind doctor [--json]`: exit 0 all pass, 1 a warning, 3 a failure."""
    import json
    nvml = None
    if settings.root == "/":
        from nvbind.host import inventory
        backend, _ = inventory.backend_for("/")
        nvml = backend if backend.name == "nvml" else None
    try:
        checks = run(settings.root, settings.config, settings.cache_dir, settings.log, nvml)
    finally:
        getattr(nvml, "close", lambda: None)()
    code = worst(checks)
    if ns.json:
        print(json.dumps({"checks": checks, "worst": ("pass", "warn", "fail")[min(code, 2)],
                          "exit_status": code}, indent=2))
    else:
        print(render(checks))
    return code
