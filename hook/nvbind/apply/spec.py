"""ContainerEdits -> OCI config.json (the precreate filter, later the runtime shim)."""

from nvbind.core.edits import ContainerEdits


def apply(cfg: dict, ed: ContainerEdits) -> list[str]:
    """Edit `cfg` in place. Returns notes on what was kept as the user had it."""
    notes: list[str] = []
    if ed.empty:
        return notes
    linux = cfg.setdefault("linux", {})
    devs = linux.setdefault("devices", [])
    have = {d.get("path") for d in devs if isinstance(d, dict)}
    for d in ed.devices:
        if d.path in have:
            notes.append(f"{d.path}: already in linux.devices, kept the config's entry")
            continue
        devs.append({"path": d.path, "type": d.type, "major": d.major, "minor": d.minor,
                     "fileMode": d.mode, "uid": 0, "gid": 0})
    rules = linux.setdefault("resources", {}).setdefault("devices", [])
    for r in ed.cgroup:
        rules.append({"allow": True, "type": r.type, "major": r.major, "minor": r.minor,
                      "access": r.access})
    mounts = cfg.setdefault("mounts", [])
    dests = {m.get("destination") for m in mounts if isinstance(m, dict)}
    for m in ed.mounts:
        if m.destination in dests:
            notes.append(f"{m.destination}: the config already mounts something there, kept it")
            continue
        mounts.append({"destination": m.destination, "type": "bind", "source": m.source,
                       "options": list(m.options)})
    proc = cfg.setdefault("process", {})
    env = proc.setdefault("env", [])
    keys = {e.partition("=")[0] for e in env}
    for e in ed.env:
        if e.name in keys and e.enforced:
            # the admin's policy: every definition of the name goes, nvbind's is the only one
            old = [x for x in env if x.partition("=")[0] == e.name]
            env[:] = [x for x in env if x.partition("=")[0] != e.name]
            if old != [f"{e.name}={e.value}"]:
                notes.append(f"env {e.name}: replaced the container's value (policy)")
        elif e.name in keys:
            if f"{e.name}={e.value}" not in env:
                notes.append(f"env {e.name}: set by the container, kept its value")
            continue
        env.append(f"{e.name}={e.value}")
    from nvbind.decide import MARKER
    ann = cfg.get("annotations")
    if not isinstance(ann, dict):
        ann = cfg["annotations"] = {}
    ann[MARKER] = ",".join(ed.gpus) or "driver"
    hooks = cfg.setdefault("hooks", {})
    for h in ed.hooks:
        hooks.setdefault(h.stage, []).append(
            {"path": h.path, "args": list(h.args), "env": list(h.env), "timeout": h.timeout})
    return notes
