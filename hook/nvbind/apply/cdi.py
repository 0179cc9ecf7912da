"""Inventory -> CDI spec (kind nvidia.com/gpu), and CDI spec validation.

Generation reuses the edits: the top-level containerEdits are what precreate injects for
every GPU request (control nodes, driver files, links and ld-cache hook), and each device
adds its own nodes. Validation is the official JSON Schema (v1.1.0, shipped in
nvbind/data/cdi) plus the rules the reference Go library enforces and the schema misses.
"""

import json
import os

from nvbind import edits as edits_mod
from nvbind.errors import InputError
from nvbind.host.model import Inventory
from nvbind.profiles import Profile
from nvbind.request import Request

KIND = "nvidia.com/gpu"
VERSIONS = ("0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "1.1.0")
HOOK_NAMES = {"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"}


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


def generate(inv: Inventory, capabilities: tuple[str, ...], hook_cmd) -> dict:
    """A CDI spec with devices by index, UUID, gpu:mig index, MIG UUID and 'all'."""
    prof = Profile("default")

    def edits_for(devices):
        return edits_mod.compute(inv, Request(True, devices, capabilities, "CDI"), prof, hook_cmd)

    common = edits_for(())                       # driver, control nodes, no GPU
    common_nodes = {d.path for d in common.devices}
    top = {
        "deviceNodes": [_with_host_path(_node(d), inv) for d in common.devices],
        "mounts": [{"hostPath": _unroot(inv.root, m.source), "containerPath": m.destination,
                    "options": list(m.options)} for m in common.mounts],
        "hooks": [{"hookName": h.stage, "path": _unroot(inv.root, h.path),
                   "args": _hook_args(inv.root, h.args), "env": list(h.env),
                   "timeout": h.timeout} for h in common.hooks],
        "env": [f"NVBIND_CAPABILITIES={','.join(sorted(capabilities))}", "NVBIND_PROFILE=default"],
    }
    devices = []

    def add(name, selector):
        ed = edits_for((selector,))
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
        ed = edits_mod.compute(inv, Request(True, "all", capabilities, "CDI"), prof, hook_cmd)
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


# ---- output ---------------------------------------------------------------------------
def to_yaml(obj, indent: int = 0) -> str:
    """Block-style YAML; every string double-quoted (JSON escapes are valid YAML)."""
    pad = "  " * indent
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        lines = []
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{json.dumps(k)}:\n{to_yaml(v, indent + 1)}")
            else:
                lines.append(f"{pad}{json.dumps(k)}: {to_yaml(v, 0)}")
        return "\n".join(lines)
    if isinstance(obj, list):
        if not obj:
            return "[]"
        lines = []
        for v in obj:
            if isinstance(v, (dict, list)) and v:
                inner = to_yaml(v, indent + 1).lstrip()
                lines.append(f"{pad}- {inner}")
            else:
                lines.append(f"{pad}- {to_yaml(v, 0)}")
        return "\n".join(lines)
    return json.dumps(obj)


# ---- validation -----------------------------------------------------------------------
ALLOWED = {
    "spec": {"cdiVersion", "kind", "annotations", "devices", "containerEdits"},
    "device": {"name", "annotations", "containerEdits"},
    "edits": {"env", "deviceNodes", "hooks", "mounts", "intelRdt", "additionalGids", "netDevices"},
    "node": {"path", "hostPath", "type", "major", "minor", "fileMode", "permissions", "uid", "gid"},
    "mount": {"hostPath", "containerPath", "options", "type"},
    "hook": {"hookName", "path", "args", "env", "timeout"},
    "netdev": {"hostInterfaceName", "name"},
    "rdt": {"closID", "l3CacheSchema", "memBwSchema", "schemata", "enableMonitoring"},
}


def _alnum(c: str) -> bool:
    return c.isascii() and c.isalnum()


def _segment_ok(s: str) -> bool:
    return (len(s) >= 1 and s[0].isascii() and s[0].isalpha() and _alnum(s[-1])
            and all(_alnum(c) or c in "_-." for c in s))


def check_kind(kind) -> str | None:
    if not isinstance(kind, str):
        return "kind must be a string"
    vendor, sep, cls = kind.partition("/")
    if not sep or "/" in cls or not _segment_ok(vendor) or not _segment_ok(cls):
        return f"kind '{kind}' is not vendor/class (letters, digits, '_', '-', '.'; " \
               "starting with a letter, ending with a letter or digit)"
    return None


def check_name(name) -> str | None:
    if not isinstance(name, str) or not name:
        return "device name must be a non-empty string"
    if not (_alnum(name[0]) and _alnum(name[-1]) and all(_alnum(c) or c in "_-.:" for c in name)):
        return f"device name '{name}' may hold only letters, digits, '_', '-', '.', ':' and " \
               "must start and end with a letter or digit"
    return None


def _annotations(ann, where, errors):
    if ann is None:
        return
    if not isinstance(ann, dict):
        errors.append(f"{where}.annotations must be an object")
        return
    total = 0
    for k, v in ann.items():
        total += len(k) + len(str(v))
        prefix, sep, name = k.rpartition("/")
        if not (1 <= len(name) <= 63 and _alnum(name[0]) and _alnum(name[-1])
                and all(_alnum(c) or c in "-_." for c in name)):
            errors.append(f"{where}.annotations: key '{k}' is not a valid annotation name")
        if sep and not (1 <= len(prefix) <= 253 and all(
                p and _alnum(p[0]) and _alnum(p[-1]) and all(_alnum(c) or c == "-" for c in p)
                for p in prefix.lower().split("."))):
            errors.append(f"{where}.annotations: prefix '{prefix}' is not a DNS subdomain")
    if total > 256 * 1024:
        errors.append(f"{where}.annotations are larger than 256 KiB")


def _env(items, where, errors):
    for i, e in enumerate(items or []):
        if not isinstance(e, str) or e.find("=") <= 0:
            errors.append(f"{where}.env[{i}] '{e}' is not KEY=VALUE")


def _unknown(obj, kind, where, errors):
    if isinstance(obj, dict):
        extra = sorted(set(obj) - ALLOWED[kind])
        if extra:
            errors.append(f"{where}: unknown field(s) {', '.join(extra)}")


def _check_edits(e, where, errors):
    if not isinstance(e, dict):
        return
    _unknown(e, "edits", where, errors)
    _env(e.get("env"), where, errors)
    for i, n in enumerate(e.get("deviceNodes") or []):
        w = f"{where}.deviceNodes[{i}]"
        _unknown(n, "node", w, errors)
        if not isinstance(n, dict):
            continue
        if not n.get("path"):
            errors.append(f"{w}: path is empty")
        if n.get("type", "") not in ("", "b", "c", "u", "p"):
            errors.append(f"{w}: type '{n.get('type')}' is not one of b, c, u, p")
        perms = n.get("permissions", "")
        if not isinstance(perms, str) or set(perms) - set("rwm"):
            errors.append(f"{w}: permissions '{perms}' may hold only r, w, m")
    for i, m in enumerate(e.get("mounts") or []):
        w = f"{where}.mounts[{i}]"
        _unknown(m, "mount", w, errors)
        if isinstance(m, dict) and (not m.get("hostPath") or not m.get("containerPath")):
            errors.append(f"{w}: hostPath and containerPath must be non-empty")
    for i, h in enumerate(e.get("hooks") or []):
        w = f"{where}.hooks[{i}]"
        _unknown(h, "hook", w, errors)
        if isinstance(h, dict):
            if h.get("hookName") not in HOOK_NAMES:
                errors.append(f"{w}: hookName '{h.get('hookName')}' is not one of "
                              f"{', '.join(sorted(HOOK_NAMES))}")
            _env(h.get("env"), w, errors)
    nets = e.get("netDevices") or []
    hosts, names = set(), set()
    for i, nd in enumerate(nets):
        w = f"{where}.netDevices[{i}]"
        _unknown(nd, "netdev", w, errors)
        if isinstance(nd, dict):
            h, n = nd.get("hostInterfaceName"), nd.get("name")
            if not h or not n:
                errors.append(f"{w}: hostInterfaceName and name must be non-empty")
            if h in hosts or n in names:
                errors.append(f"{w}: duplicate interface")
            hosts.add(h)
            names.add(n)
    rdt = e.get("intelRdt")
    if isinstance(rdt, dict):
        _unknown(rdt, "rdt", f"{where}.intelRdt", errors)
        clos = rdt.get("closID")
        if clos is not None and clos != "/" and (clos in (".", "..") or "/" in clos
                                                  or "\n" in clos or len(clos) >= 4096):
            errors.append(f"{where}.intelRdt.closID '{clos}' is not allowed")


def _schema_errors(spec) -> list[str]:
    import jsonschema  # validation only: never on a hook path
    from referencing import Registry, Resource
    base = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "cdi")
    with open(os.path.join(base, "schema.json")) as f:
        schema = json.load(f)
    with open(os.path.join(base, "defs.json")) as f:
        defs = json.load(f)
    from referencing.jsonschema import DRAFT7
    reg = Registry().with_resource("defs.json", Resource.from_contents(defs, default_specification=DRAFT7))
    v = jsonschema.Draft7Validator(schema, registry=reg)
    return [f"schema: {'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
            for e in sorted(v.iter_errors(spec), key=str)]


def validate(spec) -> list[str]:
    """Every problem found; an empty list means the spec would load."""
    if not isinstance(spec, dict):
        return ["a CDI spec must be a JSON object"]
    errors = _schema_errors(spec)
    _unknown(spec, "spec", "spec", errors)
    ver = spec.get("cdiVersion")
    if isinstance(ver, str):
        v = ver.lstrip("v")
        if v not in VERSIONS:
            errors.append(f"cdiVersion '{ver}' is not a known version ({', '.join(VERSIONS)})")
        else:
            need = min_version(spec)
            if _vkey(v) < _vkey(need):
                errors.append(f"cdiVersion {ver} is too low: the content needs at least {need}")
    k = check_kind(spec.get("kind"))
    if k and spec.get("kind") is not None:
        errors.append(k)
    _annotations(spec.get("annotations"), "spec", errors)
    _check_edits(spec.get("containerEdits"), "containerEdits", errors)
    devices = spec.get("devices")
    if isinstance(devices, list):
        if not devices:
            errors.append("devices: a spec needs at least one device")
        seen = set()
        for i, d in enumerate(devices):
            w = f"devices[{i}]"
            if not isinstance(d, dict):
                continue
            _unknown(d, "device", w, errors)
            n = check_name(d.get("name"))
            if n:
                errors.append(f"{w}: {n}")
            if d.get("name") in seen:
                errors.append(f"{w}: duplicate device name '{d.get('name')}'")
            seen.add(d.get("name"))
            _annotations(d.get("annotations"), w, errors)
            ce = d.get("containerEdits")
            if isinstance(ce, dict) and not any(ce.get(k) for k in ALLOWED["edits"]):
                errors.append(f"{w}: containerEdits is empty")
            _check_edits(ce, f"{w}.containerEdits", errors)
    return errors


def load(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            data = f.read(16 << 20)
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    try:
        return json.loads(data)
    except ValueError as e:
        if path.endswith((".yaml", ".yml")):
            try:
                import yaml  # optional: YAML specs are read only where PyYAML is installed
            except ImportError:
                raise InputError(f"{path}: YAML specs need PyYAML; this one is not JSON") from None
            return yaml.safe_load(data)
        raise InputError(f"{path} is not valid JSON: {e}") from None
