"""`nvbind plan` (what a container would get, and why) and `nvbind info` (the host)."""

import json
import os

from nvbind.errors import InputError

SAMPLE_HOST_HINT = ("no NVIDIA driver on this machine? try the built-in sample host: `make demo` "
                    "in the source tree, or `sudo python3 tools/simhost.py /tmp/simhost` and then "
                    "`nvbind --root /tmp/simhost plan --bundle examples/bundle`")


def plan(settings, ns) -> int:
    from nvbind import decide, oci
    from nvbind.admin import render
    from nvbind.apply import spec
    from nvbind.core import edits
    from nvbind.doors import host, self_command
    bundle = os.path.abspath(ns.bundle)
    cfg, rootfs = oci.load_bundle(bundle)
    settings.result["quiet"] = True
    loader = host(settings)
    try:
        d = decide.decide(settings, cfg, loader, lambda: self_command(settings))
    except InputError as e:
        if "no NVIDIA driver was found" in str(e):
            raise InputError(f"{e}. {SAMPLE_HOST_HINT}") from None
        raise
    ed = d.edits or edits.ContainerEdits(notes=list(d.reasons))
    edited = json.loads(json.dumps(cfg))
    kept = spec.apply(edited, ed)
    req, inv = d.request, d.host
    out = {
        "bundle": bundle, "rootfs": rootfs,
        "request": {"inject": d.inject, "devices": req.devices,
                    "capabilities": list(d.grant.capabilities if d.grant else req.capabilities),
                    "source": req.source},
        "decision": {"reasons": list(d.reasons), "note": d.note,
                     "profile": d.grant.profile.name if d.grant else None,
                     "isolation": d.grant.isolation if d.grant else None},
        "host": None if inv is None else {"root": inv.root, "driver_version": inv.driver_version,
                                          "gpus": len(inv.gpus), "skipped": [
                                              {"item": i, "reason": r} for i, r in inv.skipped]},
        "edits": ed.to_json(), "kept_from_config": kept,
        "live_stages_cannot_set": [e.name for e in ed.env],
    }
    if ns.json:
        print(json.dumps(out, indent=2, sort_keys=True))
    else:
        print(render.plan(out))
    return 0


def info(settings, ns) -> int:
    from nvbind.host import inventory
    conf = settings.config
    if ns.refresh:
        if not settings.cache_dir:
            raise InputError("info --refresh needs a cache directory (NVBIND_CACHE_DIR is off)")
        inv = inventory.refresh(settings.root, settings.cache_dir)
        inventory.add_dynamic(inv, conf["mps_pipe_dir"], conf["mps_log_dir"])
        inv.notes.append(f"cache rebuilt in {settings.cache_dir}")
    else:
        backend, note = inventory.backend_for(settings.root)
        try:
            inv = inventory.build(settings.root, backend, mps_pipe_dir=conf["mps_pipe_dir"],
                                  mps_log_dir=conf["mps_log_dir"])
        finally:
            getattr(backend, "close", lambda: None)()
        if note:
            inv.notes.insert(0, note)
    if inv.driver_version is None:
        inv.notes.append(SAMPLE_HOST_HINT)
    state = {"path": None, "state": "off"}
    if settings.cache_dir:
        from nvbind.host import cache
        fp = cache.fingerprint(inv.root)
        state = {"path": os.path.join(settings.cache_dir, cache._name(inv.root)),
                 "state": "fresh" if cache.load(settings.cache_dir, fp) is not None else "missing or stale"}
    if ns.json:
        print(json.dumps({**inv.to_json(), "cache": state}, indent=2, sort_keys=True))
    else:
        from nvbind.admin import render
        print(render.info(inv, state))
    return 0
