"""Inventory -> CDI spec (kind nvidia.com/gpu), at the lowest cdiVersion its content needs.

Generation reuses the edits: the top-level containerEdits are what precreate injects for
every GPU request (control nodes, driver files, links and ld-cache hook), and each device
adds its own nodes. What each device gives is nvbind.decide's.
"""

from nvbind.host.model import Inventory

KIND = "nvidia.com/gpu"
VERSIONS = ("0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "1.1.0")


def _node(d) -> dict:
    return {"path": d.path, "type": "c", "major": d.major, "minor": d.minor,
            "fileMode": d.mode, "permissions": "rw"}


def _unroot(root: str, path: str) -> str:
    """A path as the host sees it: without the --root prefix (a spec is for the host that
    root is; the DaemonSet generates with root /host, podman on the node reads it)."""
    r = root.rstrip("/")
    if not r:
        return path
    if path == r:
        return "/"
    return path[len(r):] if path.startswith(r + "/") else path


def _hook_args(root: str, args) -> list[str]:
    """Hook arguments for the host: no --root (the host's / is the root), paths unrooted."""
    out, it = [], iter(args)
    for a in it:
        if a == "--root":
            next(it, None)
            continue
        out.append(_unroot(root, a))
    return out


def _with_host_path(node: dict, inv: Inventory) -> dict:
    host = _unroot(inv.root, inv.nodes[node["path"]].host_path)
    if host != node["path"]:
        node["hostPath"] = host
    return node


def generate(settings, inv: Inventory, capabilities: tuple[str, ...], hook_cmd) -> dict:
    """A CDI spec with devices by index, UUID, gpu:mig index, MIG UUID and 'all'; what each
    device gives is nvbind.decide's (default profile, capability ceiling)."""
    from nvbind import decide
    edits_for = decide.decide_cdi(settings, inv, capabilities, hook_cmd)

    common = edits_for(())                       # driver, control nodes, no GPU
    common_nodes = {d.path for d in common.devices}
    top = {
        "deviceNodes": [_with_host_path(_node(d), inv) for d in common.devices],
        "mounts": [{"hostPath": _unroot(inv.root, m.source), "containerPath": m.destination,
                    "options": list(m.options)} for m in common.mounts],
        "hooks": [{"hookName": h.stage, "path": _unroot(inv.root, h.path),
                   "args": _hook_args(inv.root, h.args), "env": list(h.env),
                   "timeout": h.timeout} for h in common.hooks],
        "env": [f"{e.name}={e.value}" for e in common.env if e.name != "NVBIND_GPUS"],
    }
    devices = []

    def add(name, selector):
        ed = edits_for((selector,), devices_only=True)
        nodes = [_with_host_path(_node(d), inv) for d in ed.devices if d.path not in common_nodes]
        devices.append({"name": name, "containerEdits": {"deviceNodes": nodes}})

    for g in inv.gpus:
        if g.node is None:
            continue
        add(str(g.index), str(g.index))
        add(g.uuid, g.uuid)
        for m in g.migs:
            add(f"{g.index}:{m.index}", f"{g.index}:{m.index}")
            if m.uuid:
                add(m.uuid, m.uuid)
    if devices:
        ed = edits_for("all", devices_only=True)
        devices.append({"name": "all", "containerEdits": {"deviceNodes": [
            _with_host_path(_node(d), inv) for d in ed.devices if d.path not in common_nodes]}})
    spec = {"cdiVersion": "", "kind": KIND, "devices": devices, "containerEdits": top}
    spec["cdiVersion"] = min_version(spec)
    return spec


# ---- versions -------------------------------------------------------------------------
def _vkey(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.lstrip("v").split("."))


def _edits_list(spec):
    out = [spec.get("containerEdits") or {}]
    out += [d.get("containerEdits") or {} for d in spec.get("devices") or [] if isinstance(d, dict)]
    return [e for e in out if isinstance(e, dict)]


def min_version(spec: dict) -> str:
    """The lowest cdiVersion whose format covers what the spec uses (the Go rules)."""
    need = "0.3.0"

    def bump(v):
        nonlocal need
        if _vkey(v) > _vkey(need):
            need = v
    kind = spec.get("kind") or ""
    if "." in kind.partition("/")[2]:
        bump("0.6.0")
    if spec.get("annotations") or any(isinstance(d, dict) and d.get("annotations")
                                      for d in spec.get("devices") or []):
        bump("0.6.0")
    for d in spec.get("devices") or []:
        if isinstance(d, dict) and str(d.get("name", ""))[:1].isdigit():
            bump("0.5.0")
    for e in _edits_list(spec):
        if any(isinstance(m, dict) and m.get("type") for m in e.get("mounts") or []):
            bump("0.4.0")
        if any(isinstance(n, dict) and n.get("hostPath") for n in e.get("deviceNodes") or []):
            bump("0.5.0")
        if e.get("intelRdt") is not None or e.get("additionalGids"):
            bump("0.7.0")
        rdt = e.get("intelRdt") or {}
        if e.get("netDevices") or (isinstance(rdt, dict) and (rdt.get("schemata") or rdt.get("enableMonitoring"))):
            bump("1.1.0")
    return need
