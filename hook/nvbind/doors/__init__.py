"""The ways in: hook stages and the runtime shim. Each door reads its input, calls
nvbind.decide, hands the edits to apply/, and logs through `logged`. Doors decide nothing.
Kept apart from the admin verbs so that a hook run imports as little as it can; only
self_command (a GPU precreate's hook entries) imports `os` (nvbind.early)."""

import sys

from nvbind.early import abspath
from nvbind.errors import NvbindError


def self_command(settings) -> tuple[str, ...]:
    """How a hook entry calls this same nvbind: (path, argv0, global args...)."""
    import os
    if getattr(sys, "frozen", False):
        cmd = (sys.executable, "nvbind")
    else:
        # resolved: called as nvbind-runtime (a link), argv0 would make the hook a runtime
        argv0 = os.path.realpath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
        if argv0 and not argv0.endswith(".py") and os.access(argv0, os.X_OK):
            cmd = (argv0, "nvbind")
        else:
            cmd = (sys.executable, "python3", "-m", "nvbind")
    root, log, config = settings.root, settings.log, settings.config_file
    if root != "/":
        cmd += ("--root", os.path.abspath(root))
    cmd += ("--log", os.path.abspath(log) if log else "off")
    if config:
        cmd += ("--config", os.path.abspath(config))
    return cmd


def host(settings):
    """The inventory loader decide() calls once a container is granted something: the
    cached inventory, plus the devices the profile names."""
    def load(profile_devices=()):
        from nvbind.host import inventory
        conf = settings.config
        inv = inventory.cached(settings.root, settings.cache_dir, conf["mps_pipe_dir"],
                               conf["mps_log_dir"], profile_devices)
        for note in inv.notes:
            if note.startswith("cannot write"):
                warn(settings, note)
        return inv
    return load


def state_and_bundle(settings):
    """(OCI state, config.json, rootfs) of the OCI-stage doors: the state from stdin, its
    id in the log line, the bundle it names."""
    from nvbind import oci
    state = oci.parse_state(oci.read_stdin(sys.stdin.buffer))
    settings.result["id"] = state["id"]
    cfg, rootfs = oci.load_bundle(state["bundle"])
    return state, cfg, rootfs


def warn(settings, note: str) -> None:
    settings.result.setdefault("warnings", []).append(note)
    if not settings.result.get("quiet"):
        from nvbind import log
        log.note(f"warning: {note}")


def record(settings, decision) -> None:
    """What the log line says of a decision."""
    r = settings.result
    if decision.note:
        r["note"] = decision.note
    if decision.grant is not None:
        r["profile"] = decision.grant.profile.name
    ed = decision.edits
    if ed is not None and not ed.empty:
        r.update(gpus=ed.gpus, devices=[d.path for d in ed.devices])


def take_leases(settings, keys: list[str], state: dict, hostname=None) -> None:
    """Exclusive leases for the container the OCI state names (createRuntime: id, bundle
    and the container's init pid)."""
    if not keys:
        return
    from nvbind.apply import leases
    if not settings.config["lease_dir"]:
        from nvbind.settings import user_runtime_dir
        raise NvbindError("exclusive GPU access needs a lease directory, and there is none: "
                          f"{user_runtime_dir()[1]}; set XDG_RUNTIME_DIR in the hook's env, or "
                          "lease_dir in the configuration; refusing the exclusive container")
    me = leases.holder(state["id"], abspath(state["bundle"]), state.get("pid"), hostname)
    notes = leases.acquire(settings.config["lease_dir"], keys, me)
    settings.result["leases"] = keys
    from nvbind import log
    for n in notes:
        log.note(n)


def check_leases(settings, ed) -> None:
    """Every GPU user, whatever its isolation, is refused a GPU another container holds
    exclusively (one directory listing when leases exist, nothing when none do); an
    exclusive one also a GPU a running shared/virtual container uses."""
    if ed is None or not ed.keys or not settings.config["lease_dir"]:
        return      # no lease directory (rootless without a runtime dir): none can be held
    from nvbind.apply import leases
    leases.check(settings.config["lease_dir"], ed.keys, exclusive=ed.isolation == "exclusive")


def register_user(settings, keys: list[str], state: dict, hostname=None) -> None:
    """A shared/virtual GPU user records itself (createContainer, or createRuntime when it
    decides there), so that a later exclusive container is refused while it runs."""
    if not keys or not settings.config["lease_dir"]:
        return
    from nvbind.apply import leases
    me = leases.holder(state["id"], abspath(state["bundle"]), state.get("pid"), hostname)
    note = leases.register(settings.config["lease_dir"], keys, me)
    if note:
        warn(settings, note)
    else:
        settings.result["uses"] = keys


def _wanted(level: str, entry: dict) -> bool:
    """log_level: error logs failures only, warn also runs with warnings, info/debug all."""
    if level == "error":
        return entry.get("outcome") != "ok"
    if level == "warn":
        return entry.get("outcome") != "ok" or "warnings" in entry
    return True


def logged(settings, stage: str, fn, *a) -> int:
    """Run one door; append one JSON line to the log whatever happens, if log_level wants it.
    Outcomes: ok, error (nvbind refused, one line on stderr), internal (a bug)."""
    import time
    t0 = time.monotonic()
    entry: dict = {"stage": stage}
    try:
        rc = fn(settings, *a)
        entry["outcome"] = "ok"
        return rc
    except NvbindError as e:
        entry.update(outcome="error", error=" ".join(str(e).split()))
        raise
    except Exception as e:
        entry.update(outcome="internal", error=f"internal: {type(e).__name__}: {e}")
        raise
    finally:
        # the root as given; the configuration is read only where the stage needed it
        entry["root"] = settings.root_opt or (settings.config["root"] if settings.loaded else "/")
        entry.update(settings.result, duration_ms=round((time.monotonic() - t0) * 1000, 2))
        entry.pop("quiet", None)
        try:
            log = settings.log
        except NvbindError:
            log = settings.log_opt       # a broken configuration: log where told, if told
        if log and _wanted(settings.log_level(), entry):
            from nvbind import log as logmod
            logmod.record(log, entry)
