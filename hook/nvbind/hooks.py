"""Hook stages and the runtime shim: the container-start path, kept apart from the
administrative verbs so that a hook run imports as little as it can."""

import os
import sys

from nvbind.cli import Args, _next
from nvbind.errors import InputError, NvbindError


def self_command(root: str, log: str | None = None, config: str | None = None) -> tuple[str, ...]:
    """How a hook entry calls this same nvbind: (path, argv0, global args...)."""
    if getattr(sys, "frozen", False):
        cmd = (sys.executable, "nvbind")
    else:
        # resolved: called as nvbind-runtime (a link), argv0 would make the hook a runtime
        argv0 = os.path.realpath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
        if argv0 and not argv0.endswith(".py") and os.access(argv0, os.X_OK):
            cmd = (argv0, "nvbind")
        else:
            cmd = (sys.executable, "python3", "-m", "nvbind")
    if root != "/":
        cmd += ("--root", os.path.abspath(root))
    if log:
        cmd += ("--log", os.path.abspath(log))
    else:
        cmd += ("--log", "off")
    if config:
        cmd += ("--config", os.path.abspath(config))
    return cmd


def _pipeline(args: Args, cfg: dict, with_hook: bool = True, result: dict | None = None):
    """(request, inventory, edits) for a config; edits is None when nothing was asked.

    A container that asks for nothing costs one env scan: nothing else is imported."""
    from nvbind import oci, request
    env, ann = oci.env_map(cfg), cfg.get("annotations") or {}
    # Fail open: a container that asks for nothing under every request source is passed
    # through before the configuration is even read (a broken config cannot harm it).
    if request.from_config(env, ann, cfg, request.ALL_SOURCES).empty:
        return request.NO_REQUEST, None, None
    settings = args.settings
    req = request.from_config(env, ann, cfg, settings["sources"])
    if req.empty:
        return req, None, None
    from nvbind import edits, profiles
    from nvbind.host import inventory
    offered = set(settings["capabilities"])
    refused = [c for c in req.capabilities if c not in offered]
    if refused:
        raise InputError(f"capability {', '.join(refused)} is not offered on this host "
                         f"(configuration allows {', '.join(sorted(offered))})")
    name = (ann.get(request.ANN_PROFILE) if settings["sources"]["annotations"] else None) \
        or env.get("NVBIND_PROFILE")
    prof = profiles.resolve(name, settings)
    if result is not None:
        result["profile"] = prof.name
    inv = inventory.cached(args.root, args.cache_dir, settings["mps_pipe_dir"],
                           settings["mps_log_dir"], prof.devices)
    for note in inv.notes:
        if note.startswith("cannot write"):
            print(f"nvbind: warning: {note}", file=sys.stderr)
            if result is not None:
                result["warning"] = note
    hook = self_command(args.root, args.log, args.config_path or os.environ.get("NVBIND_CONFIG")) \
        if with_hook else None
    return req, inv, edits.compute(inv, req, prof, hook)


def _take_leases(args: Args, ed, bundle: str, cid: str | None, hostname: str | None) -> None:
    if not ed.leases:
        return
    from nvbind import leases
    notes = leases.acquire(args.settings["lease_dir"], ed.leases,
                           {"bundle": os.path.abspath(bundle), "id": cid, "hostname": hostname})
    args.result["leases"] = ed.leases
    for n in notes:
        print(f"nvbind: {n}", file=sys.stderr)


def cmd_precreate(args: Args, rest: list[str]) -> int:
    from nvbind import oci
    if rest:
        raise InputError(f"hook precreate takes no arguments, got {rest[0]!r}")
    text = oci.read_stdin(sys.stdin.buffer)
    cfg = oci.parse_config(text, "config.json on stdin")
    if isinstance(cfg.get("hostname"), str):
        args.result["hostname"] = cfg["hostname"]
    if not oci.may_request(text):
        # no key that could ask for a GPU appears anywhere (and no \u escape could hide
        # one): the config goes back byte for byte, without loading anything else
        sys.stdout.write(text)
        return 0
    _req, _inv, ed = _pipeline(args, cfg, result=args.result)
    if ed is None or ed.empty:
        sys.stdout.write(text)
        return 0
    args.result.update(gpus=ed.gpus, devices=[d.path for d in ed.devices])
    # podman runs precreate in the bundle directory, and poststop's state names it
    _take_leases(args, ed, os.getcwd(), None, cfg.get("hostname"))
    from nvbind.apply import spec
    for note in spec.apply(cfg, ed):
        print(f"nvbind: {note}", file=sys.stderr)
    sys.stdout.write(oci.dump(cfg))
    sys.stdout.write("\n")
    return 0


def cmd_create_container(args: Args, rest: list[str]) -> int:
    from nvbind import oci
    from nvbind.apply import ldcache
    folders, links, driver = [], [], None
    it = iter(rest)
    for a in it:
        if a == "--folder":
            folders.append(_next(it, a))
        elif a == "--driver-version":
            driver = _next(it, a)
        elif a == "--link":
            target, sep, link = _next(it, a).partition("::")
            if not sep or not target or not link.startswith("/"):
                raise InputError(f"--link wants TARGET::/ABS/LINK, got {target}{sep}{link}")
            links.append((target, link))
        else:
            raise InputError(f"hook createContainer: unknown argument {a!r}")
    state = oci.parse_state(oci.read_stdin(sys.stdin.buffer))
    args.result["id"] = state["id"]
    _cfg, rootfs = oci.load_bundle(state["bundle"])
    ldcache.make_links(rootfs, links)
    if folders:
        from nvbind.apply import compat
        folders = compat.prepare(rootfs, driver, folders)
        if folders[0] == compat.COMPAT_DIR:
            args.result["cuda_compat"] = compat.COMPAT_DIR
        ldcache.update(rootfs, folders, args.settings.get("ldconfig") or None)
    return 0


def cmd_live(args: Args, rest: list[str]) -> int:
    """createRuntime / prestart: inject into the container the runtime has just built."""
    from nvbind import oci
    if rest:
        raise InputError(f"this hook stage takes no arguments, got {rest[0]!r}")
    state = oci.parse_state(oci.read_stdin(sys.stdin.buffer))
    args.result["id"] = state["id"]
    cfg, rootfs = oci.load_bundle(state["bundle"])
    if "NVBIND_GPUS" in oci.env_map(cfg):
        args.result["note"] = "already injected at precreate"
        return 0
    _req, inv, ed = _pipeline(args, cfg, with_hook=False, result=args.result)
    if ed is None or ed.empty:
        return 0
    args.result.update(gpus=ed.gpus, devices=[d.path for d in ed.devices])
    _take_leases(args, ed, state["bundle"], state["id"], cfg.get("hostname"))
    not_applied = [e.name for e in ed.env]
    if not_applied:
        args.result["env_not_applied"] = not_applied
        print(f"nvbind: note: {', '.join(not_applied)} cannot be set at this stage (the process "
              "environment is fixed); use precreate, the runtime shim or CDI for them",
              file=sys.stderr)
    from nvbind.apply import live
    args.result["done"] = live.apply(state, rootfs, ed,
                                     inv.driver_version if "compute" in _caps(ed) else None,
                                     args.settings.get("ldconfig") or None)
    return 0


def _caps(ed) -> set:
    return set(next((e.value for e in ed.env if e.name == "NVBIND_CAPABILITIES"), "").split(","))


def cmd_poststop(args: Args, rest: list[str]) -> int:
    """Release what the container held (exclusive GPU leases). Safe to call twice, for a
    container nvbind never touched, or with a state it cannot read (poststop failures are
    only warnings for the engine anyway)."""
    from nvbind import leases, oci
    data = oci.read_stdin(sys.stdin.buffer)
    try:
        state = oci.parse_state(data)
    except InputError as e:
        args.result["note"] = f"unreadable state ignored: {e}"
        return 0
    args.result["id"] = state["id"]
    released = leases.release(args.settings["lease_dir"], os.path.abspath(state["bundle"]))
    if released:
        args.result["released"] = released
    return 0


def cmd_runtime(args: Args, rest: list[str]) -> int:
    """OCI runtime shim: edit the bundle on create/run, then exec the real runtime.

    On create the shim's stdio is the container's (containerd hands the container's fifos to
    the runtime, which passes them on): nothing nvbind says may go there. Notes go to
    nvbind's log entry; an error goes, as runc's own errors do, to the runtime's `--log`
    file, from which containerd's shim puts it into the error docker and CRI return."""
    from nvbind.apply import shim
    verb, i = shim.split(rest)
    real = shim.real_runtime()
    if verb in ("create", "run"):
        bundle = os.path.abspath(shim.bundle_of(rest[i + 1:]))
        t0 = _now()
        entry: dict = {"stage": f"runtime {verb}", "root": args.root, "bundle": bundle,
                       "id": rest[-1] if len(rest) > i + 1 else None}
        import io
        saved, sys.stderr = sys.stderr, io.StringIO()
        try:
            ed = shim.edit_bundle(bundle, lambda cfg: _pipeline(args, cfg, result=entry), entry)
            if ed is not None:
                _take_leases(args, ed, bundle, entry["id"], None)
            entry["outcome"] = "ok"
        except Exception as e:  # noqa: BLE001 - reported to the engine, never a traceback
            msg = " ".join(str(e).split())
            if not isinstance(e, NvbindError):
                msg = f"internal: {type(e).__name__}: {msg}"
            entry.update(outcome="error", error=msg)
            runc_log = shim.global_value(rest, "--log")
            if not runc_log:
                raise
            shim.report_error(runc_log, shim.global_value(rest, "--log-format"),
                              f"nvbind: error: {msg}")
            return e.exit_code if isinstance(e, NvbindError) else 1
        finally:
            notes = [n for n in sys.stderr.getvalue().splitlines() if n.strip()]
            sys.stderr = saved
            if notes:
                entry["notes"] = notes
            entry["duration_ms"] = round((_now() - t0) * 1000, 2)
            from nvbind import log
            log.record(args.log, entry)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(real, [real, *rest])
    return 1  # not reached


def _now() -> float:
    import time
    return time.monotonic()


