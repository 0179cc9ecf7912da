"""Readable text for `plan` and `info`."""


def _mode(m: int) -> str:
    return f"{m:04o}"


def info(inv, cache_state: dict | None = None) -> str:
    out = [f"host root      {inv.root}", f"backend        {inv.backend}",
           f"driver         {inv.driver_version or 'none found'}"
           + (f" (CUDA {inv.cuda_version})" if inv.cuda_version else "")]
    if cache_state:
        out.append(f"hook cache     {cache_state['path'] or '-'}: {cache_state['state']}")
    mps = inv.mps or {}
    if mps:
        out.append(f"CUDA MPS       {mps.get('pipe_dir')}: "
                   f"{'control daemon running' if mps.get('running') else 'no control daemon'}")
    out += ["", "GPUs"]
    if not inv.gpus:
        out.append("  (none)")
    for g in inv.gpus:
        extra = "".join(f"  {k} {v}" for k, v in (("arch", g.arch), ("brand", g.brand)) if v)
        out.append(f"  {g.index}  minor {g.minor:<3} {g.bus_id}  {g.uuid}  {g.model}{extra}")
        for m in g.migs:
            out.append(f"     MIG {g.index}:{m.index}  gi {m.gi} ci {m.ci}  {m.uuid or '(uuid: NVML only)'}"
                       f"  {' '.join(m.caps)}")
    out += ["", "device nodes"]
    for n in sorted(inv.nodes.values(), key=lambda n: n.path):
        out.append(f"  {n.path:<34} c {n.major}:{n.minor:<4} {_mode(n.mode)}")
    by_cap: dict[str, list] = {}
    for f in inv.files:
        by_cap.setdefault(f"{f.capability} {f.kind}", []).append(f)
    out += ["", "driver files"]
    for key in sorted(by_cap):
        out.append(f"  {key}")
        out += [f"    {f.path}" for f in by_cap[key]]
    if inv.skipped:
        out += ["", "skipped"]
        out += [f"  {i}: {r}" for i, r in inv.skipped]
    if inv.notes:
        out += ["", "notes"] + [f"  {n}" for n in inv.notes]
    return "\n".join(out)


def plan(p: dict) -> str:
    r, e = p["request"], p["edits"]
    out = [f"bundle   {p['bundle']}", f"rootfs   {p['rootfs']}"]
    if not r["inject"]:
        out.append("request  none: the container is left unchanged")
        out += [f"  {n}" for n in e["notes"]]
        return "\n".join(out)
    devs = r["devices"] if isinstance(r["devices"], str) else ",".join(r["devices"]) or "none"
    out.append(f"request  devices={devs} capabilities={','.join(r['capabilities'])} (from {r['source']})")
    out.append(f"host     driver {p['host']['driver_version']}, {p['host']['gpus']} GPU(s)")
    out.append(f"gpus     {', '.join(e['gpus']) or '(none)'}")
    out.append("\ndevice nodes (with cgroup rule rw)")
    out += [f"  {d['path']:<30} c {d['major']}:{d['minor']} {_mode(d['mode'])}  - {d['reason']}"
            for d in e["devices"]]
    out.append("\nmounts")
    out += [f"  {m['destination']}  [{','.join(m['options'])}]  - {m['reason']}" for m in e["mounts"]]
    out.append("\nsymlinks")
    out += [f"  {s['link']} -> {s['target']}  - {s['reason']}" for s in e["symlinks"]]
    out.append("\nld cache folders")
    out += [f"  {d}" for d in e["ldcache_folders"]]
    out.append("\nenvironment")
    out += [f"  {v['name']}={v['value']}  - {v['reason']}" for v in e["env"]]
    out.append("\nhooks")
    out += [f"  {h['stage']}: {' '.join(h['args'])}  - {h['reason']}" for h in e["hooks"]]
    if p["live_stages_cannot_set"]:
        out.append("\nat createRuntime/prestart these cannot be set (use precreate, the runtime "
                   "shim or CDI): " + ", ".join(p["live_stages_cannot_set"]))
    if p["kept_from_config"]:
        out.append("\nkept as the config had it")
        out += [f"  {k}" for k in p["kept_from_config"]]
    if e["notes"]:
        out.append("\nnotes")
        out += [f"  {n}" for n in e["notes"]]
    if p["host"]["skipped"]:
        out.append("\nskipped on the host")
        out += [f"  {s['item']}: {s['reason']}" for s in p["host"]["skipped"]]
    return "\n".join(out)
