"""ContainerEdits -> OCI config.json (the precreate filter, later the runtime shim)."""

from nvbind.edits import ContainerEdits


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
    have = dict(e.partition("=")[::2] for e in env if isinstance(e, str))
    for e in ed.env:
        if e.name in have:
            if have[e.name] != e.value:
                notes.append(f"env {e.name}: set by the container, kept its value")
            continue
        env.append(f"{e.name}={e.value}")
    hooks = cfg.setdefault("hooks", {})
    for h in ed.hooks:
        hooks.setdefault(h.stage, []).append(
            {"path": h.path, "args": list(h.args), "env": list(h.env), "timeout": h.timeout})
    return notes
