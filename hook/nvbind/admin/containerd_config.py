"""Register nvbind as a runtime in containerd's config.toml, keeping everything else.

containerd 1.x reads one config.toml; an `imports` file replaces whole plugin sections, and
Debian's config imports nothing, so a conf.d drop-in is not read at all. Merging into
config.toml is the one way that works for 1.6 and later: a table for the nvbind runtime is
appended. containerd decodes `runtimes` onto its defaults as one map: a config that defines
any runtime loses the built-in `runc` (CRI then refuses to load: no runtime for the default
name), so where the config defines no runtime the built-in runc entry is written as well.
The result is parsed again and must equal the old config plus those tables, or nothing is
written. Never imported on a hook path.
"""
from __future__ import annotations

import tomllib

from nvbind.errors import NvbindError

# where the CRI plugin's runtimes live, by config `version`
CRI_TABLES = {1: 'plugins.cri', 2: 'plugins."io.containerd.grpc.v1.cri"',
              3: 'plugins."io.containerd.cri.v1.runtime"'}
CRI_KEYS = {1: ("cri",), 2: ("io.containerd.grpc.v1.cri",), 3: ("io.containerd.cri.v1.runtime",)}


def _value(v) -> str | None:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return None


def _runtimes(cfg: dict, version: int) -> tuple[dict, dict | None]:
    cri = cfg.get("plugins", {})
    for k in CRI_KEYS[version]:
        cri = cri.get(k, {}) if isinstance(cri, dict) else {}
    ctd = cri.get("containerd", {}) if isinstance(cri, dict) else {}
    rts = ctd.get("runtimes") if isinstance(ctd, dict) else None
    return (ctd if isinstance(ctd, dict) else {}), (rts if isinstance(rts, dict) else None)


def merge(text: str | None, runtime_bin: str, where: str) -> str | None:
    """config.toml text with the nvbind runtime added; None when it is already there."""
    try:
        old = tomllib.loads(text) if text else {}
    except tomllib.TOMLDecodeError as e:
        raise NvbindError(f"{where} is not valid TOML ({e}); not touching it") from None
    version = old.get("version", 1) if text else 2
    if version not in CRI_TABLES:
        raise NvbindError(f"{where}: unknown config version {version!r}; not touching it")
    ctd, rts = _runtimes(old, version)
    want = {"runtime_type": "io.containerd.runc.v2"}
    if rts and "nvbind" in rts:
        have = rts["nvbind"]
        if isinstance(have, dict) and have.get("options", {}).get("BinaryName") == runtime_bin:
            return None
        raise NvbindError(f"{where} already defines a runtime named nvbind (not nvbind's); "
                          "not touching it")
    base = f'{CRI_TABLES[version]}.containerd.runtimes'
    out = [] if not text else [text.rstrip("\n"), ""]
    if not text:
        out += ["version = 2", ""]
    out.append("# nvbind: the nvbind runtime (runc through nvbind-runtime); pods pick it with")
    out.append('# the RuntimeClass handler "nvbind". `nvbind uninstall` restores this file.')
    added_runc = False
    if rts is None and ctd.get("default_runtime_name", "runc") == "runc":
        # the built-in runc entry, which an explicit runtimes table would otherwise drop
        out += [f"[{base}.runc]", '  runtime_type = "io.containerd.runc.v2"', ""]
        added_runc = True
    # the same runc options as the runc runtime (SystemdCgroup etc.), our binary in front
    opts = {}
    runc = (rts or {}).get("runc")
    if isinstance(runc, dict) and isinstance(runc.get("options"), dict):
        opts = {k: v for k, v in runc["options"].items() if _value(v) is not None}
    opts["BinaryName"] = runtime_bin
    runc_type = runc.get("runtime_type") if isinstance(runc, dict) else None
    if isinstance(runc_type, str) and runc_type.startswith("io.containerd.runc."):
        want["runtime_type"] = runc_type
    out += [f"[{base}.nvbind]", f'  runtime_type = "{want["runtime_type"]}"',
            f"[{base}.nvbind.options]"]
    out += [f"  {k} = {_value(v)}" for k, v in opts.items()]
    new = "\n".join(out) + "\n"
    # the result must be the old configuration plus exactly our tables
    try:
        parsed = tomllib.loads(new)
    except tomllib.TOMLDecodeError as e:
        raise NvbindError(f"{where}: cannot add the nvbind runtime to this file's layout ({e}); "
                          "add it by hand (see packaging/containerd/nvbind.toml)") from None
    _ctd2, rts2 = _runtimes(parsed, version)
    if not rts2 or rts2.get("nvbind", {}).get("options", {}).get("BinaryName") != runtime_bin:
        raise NvbindError(f"{where}: the nvbind runtime did not land where containerd reads it; "
                          "not touching it")
    rts2.pop("nvbind")
    if added_runc:
        rts2.pop("runc")
    if text and _prune(parsed) != _prune(old):
        raise NvbindError(f"{where}: adding the nvbind runtime would change other settings; "
                          "not touching it")
    return new


def _prune(d):
    """d without empty tables (the headers we append create their parents)."""
    if not isinstance(d, dict):
        return d
    out = {}
    for k, v in d.items():
        v = _prune(v)
        if v != {}:
            out[k] = v
    return out


def registered(dump: str, runtime_bin_name: str = "nvbind-runtime") -> tuple[bool, str]:
    """From `containerd config dump`: (nvbind runtime in force, detail)."""
    try:
        cfg = tomllib.loads(dump)
    except tomllib.TOMLDecodeError as e:
        return False, f"config dump unreadable ({e})"
    version = cfg.get("version", 1)
    if version not in CRI_KEYS:
        return False, f"config version {version!r}"
    _ctd, rts = _runtimes(cfg, version)
    rts = rts or {}
    nv = rts.get("nvbind")
    if not isinstance(nv, dict):
        return False, "no runtime named nvbind"
    binary = (nv.get("options") or {}).get("BinaryName", "")
    if not str(binary).endswith(runtime_bin_name):
        return False, f"runtime nvbind runs {binary!r}, not {runtime_bin_name}"
    default = _ctd.get("default_runtime_name", "runc")
    if default not in rts:
        return False, f"default runtime {default!r} missing: CRI will not load"
    return True, f"runtime nvbind -> {binary}"
