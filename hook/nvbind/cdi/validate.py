"""CDI spec validation, as strict as the reference Go library (tags.cncf.io/container-device-
interface): the official JSON Schema (v1.1.0, shipped in nvbind/data/cdi) plus the rules the
library enforces and the schema misses."""

import json
import os

from nvbind.cdi.generate import VERSIONS, _vkey, min_version

HOOK_NAMES = {"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"}

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
        for num in ("major", "minor"):
            if isinstance(n.get(num), int) and n[num] < 0:
                errors.append(f"{w}: {num} {n[num]} is negative")
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
            if not h.get("path"):
                errors.append(f"{w}: path is empty")
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
