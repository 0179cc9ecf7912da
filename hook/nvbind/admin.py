"""Administrative verbs: plan, info, cdi, config, install. Never on a hook path."""

import os
import sys

from nvbind.cli import Args, _next
from nvbind.errors import InputError, NvbindError
from nvbind.hooks import _pipeline, self_command


def _cdi_text(args: Args, capabilities, fmt: str, host_paths: bool = False) -> str:
    import json
    from nvbind.apply import cdi
    from nvbind.host import inventory
    inv = inventory.cached(args.root, args.cache_dir)
    if inv.driver_version is None:
        raise NvbindError("no NVIDIA driver found: nothing to describe")
    spec = cdi.generate(inv, capabilities, self_command(args.root, args.log, args.config_path))
    if host_paths:
        from nvbind.apply.cdi_host import host_paths as relocate
        spec = relocate(spec, os.path.abspath(args.root))
    return (json.dumps(spec, indent=2) if fmt == "json" else cdi.to_yaml(spec)) + "\n"


def cmd_cdi(args: Args, rest: list[str]) -> int:
    from nvbind.apply import cdi
    if not rest:
        raise InputError("cdi needs a verb: generate, list, validate")
    verb, rest = rest[0], rest[1:]
    if verb == "generate":
        output, fmt, caps, watch, host = None, None, "utility,compute", None, False
        it = iter(rest)
        for a in it:
            if a == "--host-paths":
                host = True     # --root is the host's / seen from a container
            elif a == "--watch":
                try:
                    watch = float(_next(it, a))
                except ValueError:
                    raise InputError("--watch wants seconds") from None
            elif a == "--output":
                output = _next(it, a)
            elif a == "--format":
                fmt = _next(it, a)
            elif a == "--capabilities":
                caps = _next(it, a)
            else:
                raise InputError(f"cdi generate: unknown argument {a!r}")
        fmt = fmt or ("yaml" if output and output.endswith((".yaml", ".yml")) else "json")
        if fmt not in ("json", "yaml"):
            raise InputError(f"--format must be json or yaml, not {fmt!r}")
        from nvbind import request
        capabilities = request.parse_capabilities(caps, "--capabilities", False)
        if watch is not None and not output:
            raise InputError("--watch needs --output")
        last = None
        while True:
            try:
                text = _cdi_text(args, capabilities, fmt, host)
            except NvbindError:
                if watch is None:
                    raise
                text = None     # no driver right now: keep the last spec, look again later
            if text is not None and text != last:
                if output:
                    from nvbind.apply.shim import write_atomically
                    os.makedirs(os.path.dirname(os.path.abspath(output)), 0o755, exist_ok=True)
                    write_atomically(os.path.abspath(output), text)
                    os.chmod(output, 0o644)
                    print(f"wrote {output}", file=sys.stderr)
                else:
                    sys.stdout.write(text)
                last = text
            if watch is None:
                return 0
            import time
            time.sleep(watch)    # regenerate: a driver update changes version, files, nodes
    if verb == "validate":
        if len(rest) != 1:
            raise InputError("cdi validate takes one file")
        errors = cdi.validate(cdi.load(rest[0]))
        for e in errors:
            print(f"{rest[0]}: {e}")
        if errors:
            raise InputError(f"{rest[0]}: {len(errors)} problem(s), see above")
        print(f"{rest[0]}: valid")
        return 0
    if verb == "list":
        dirs = ["/etc/cdi", "/var/run/cdi"]
        it = iter(rest)
        for a in it:
            if a == "--spec-dir":
                dirs = [_next(it, a)] if dirs == ["/etc/cdi", "/var/run/cdi"] else dirs + [_next(it, a)]
            else:
                raise InputError(f"cdi list: unknown argument {a!r}")
        for d in dirs:
            try:
                names = sorted(os.listdir(d))
            except OSError:
                continue
            for n in names:
                if not n.endswith((".json", ".yaml", ".yml")):
                    continue
                try:
                    spec = cdi.load(os.path.join(d, n))
                except InputError as e:
                    print(f"nvbind: warning: {e}", file=sys.stderr)
                    continue
                for dev in spec.get("devices") or []:
                    print(f"{spec.get('kind')}={dev.get('name')}")
        return 0
    raise InputError(f"unknown cdi verb {verb!r}: generate, list, validate")


def cmd_install(args: Args, rest: list[str], remove: bool = False) -> int:
    from nvbind import install
    dest, engines = "/", []
    it = iter(rest)
    for a in it:
        if a == "--dest":
            dest = _next(it, a)
        elif a == "--engine" and not remove:
            engines += [e for e in _next(it, a).split(",") if e]
        else:
            raise InputError(f"{'un' if remove else ''}install: unknown argument {a!r}")
    # a --root / --log given to install is written into every hook entry's env
    return install.main(dest, engines, remove, args.root_opt, args.log_opt)


def cmd_config(args: Args, rest: list[str]) -> int:
    import json
    from nvbind import config
    verb, rest = (rest[0], rest[1:]) if rest else ("", [])
    if verb == "validate":
        if len(rest) > 1:
            raise InputError("config validate takes at most one file")
        path = os.path.abspath(rest[0] if rest else args.config_path
                               or os.environ.get("NVBIND_CONFIG") or config.DEFAULT_PATH)
        try:
            with open(path, "rb") as f:
                config.parse(path, f.read(1 << 20))
        except OSError as e:
            raise InputError(f"cannot read {path}: {e.strerror}") from None
        print(f"{path}: valid")
        return 0
    if verb == "show":
        settings = dict(args.settings)
        from nvbind import profiles
        settings["profiles"] = {n: (settings["profiles"].get(n) or profiles.BUILTIN[n])
                                for n in profiles.known(settings)}
        print(json.dumps(settings, indent=2, sort_keys=True))
        return 0
    if verb == "import-surge":
        import tomllib
        from nvbind import surge
        if len(rest) != 1:
            raise InputError("config import-surge takes one file")
        try:
            with open(rest[0], "rb") as f:
                doc = tomllib.load(f)
        except OSError as e:
            raise InputError(f"cannot read {rest[0]}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise InputError(f"{rest[0]}: not valid TOML: {e}") from None
        out, notes = surge.convert(doc, rest[0])
        errors = config.schema_errors(out)
        if errors:
            raise InputError(f"{rest[0]}: the converted profiles are not valid: {'; '.join(errors)}")
        for n in notes:
            print(f"nvbind: {n}", file=sys.stderr)
        sys.stdout.write(surge.to_toml(out))
        return 0
    raise InputError("config needs a verb: validate [FILE], show, import-surge FILE")


def cmd_plan(args: Args, rest: list[str]) -> int:
    import json
    from nvbind import oci
    bundle, as_json = None, False
    it = iter(rest)
    for a in it:
        if a == "--bundle":
            bundle = _next(it, a)
        elif a == "--json":
            as_json = True
        else:
            raise InputError(f"plan: unknown argument {a!r}")
    if not bundle:
        raise InputError("plan needs --bundle DIR")
    cfg, rootfs = oci.load_bundle(os.path.abspath(bundle))
    req, inv, ed = _pipeline(args, cfg)
    from nvbind import edits
    from nvbind.apply import spec
    if ed is None:
        ed = edits.ContainerEdits(notes=["no GPU requested: the container is left unchanged"])
    edited = json.loads(json.dumps(cfg))
    kept = spec.apply(edited, ed)
    out = {
        "bundle": os.path.abspath(bundle), "rootfs": rootfs,
        "request": {"inject": req.wants_driver, "devices": req.devices,
                    "capabilities": req.capabilities, "source": req.source},
        "host": None if inv is None else {"root": inv.root, "driver_version": inv.driver_version,
                                          "gpus": len(inv.gpus), "skipped": [
                                              {"item": i, "reason": r} for i, r in inv.skipped]},
        "edits": ed.to_json(), "kept_from_config": kept,
        "live_stages_cannot_set": [e.name for e in ed.env],
    }
    if as_json:
        print(json.dumps(out, indent=2, sort_keys=True))
        return 0
    from nvbind import render
    print(render.plan(out))
    return 0


def cmd_info(args: Args, rest: list[str]) -> int:
    import json
    from nvbind.host import inventory
    as_json = refresh = False
    for a in rest:
        if a == "--json":
            as_json = True
        elif a == "--refresh":
            refresh = True
        else:
            raise InputError(f"info: unknown argument {a!r}")
    settings = args.settings
    if refresh:
        if not args.cache_dir:
            raise InputError("info --refresh needs a cache directory (NVBIND_CACHE_DIR is off)")
        inv = inventory.refresh(args.root, args.cache_dir)
        inventory.add_dynamic(inv, settings["mps_pipe_dir"], settings["mps_log_dir"])
        inv.notes.append(f"cache rebuilt in {args.cache_dir}")
    else:
        backend, note = inventory.backend_for(args.root)
        try:
            inv = inventory.build(args.root, backend, mps_pipe_dir=settings["mps_pipe_dir"],
                                  mps_log_dir=settings["mps_log_dir"])
        finally:
            getattr(backend, "close", lambda: None)()
        if note:
            inv.notes.insert(0, note)
    state = {"path": None, "state": "off"}
    if args.cache_dir:
        from nvbind.host import cache
        fp = cache.fingerprint(inv.root)
        state = {"path": os.path.join(args.cache_dir, cache._name(inv.root)),
                 "state": "fresh" if cache.load(args.cache_dir, fp) is not None else "missing or stale"}
    if as_json:
        print(json.dumps({**inv.to_json(), "cache": state}, indent=2, sort_keys=True))
    else:
        from nvbind import render
        print(render.info(inv, state))
    return 0




def cmd_doctor(args: Args, rest: list[str]) -> int:
    import json
    from nvbind import doctor
    as_json = False
    for a in rest:
        if a == "--json":
            as_json = True
        else:
            raise InputError(f"doctor: unknown argument {a!r}")
    nvml = None
    if args.root == "/":
        from nvbind.host import inventory
        backend, _ = inventory.backend_for("/")
        nvml = backend if backend.name == "nvml" else None
    try:
        checks = doctor.run(args.root, args.settings, args.cache_dir, args.log, nvml)
    finally:
        getattr(nvml, "close", lambda: None)()
    code = doctor.worst(checks)
    if as_json:
        print(json.dumps({"checks": checks, "worst": ("pass", "warn", "fail")[min(code, 2)],
                          "exit_status": code}, indent=2))
    else:
        print(doctor.render(checks))
    return code


def cmd_metrics(args: Args, rest: list[str]) -> int:
    from nvbind import metrics
    from nvbind.host import inventory
    listen = None
    it = iter(rest)
    for a in it:
        if a == "--listen":
            listen = _next(it, a)
            if ":" not in listen:
                listen = f"127.0.0.1:{listen}"
        else:
            raise InputError(f"metrics: unknown argument {a!r}")

    def render() -> str:
        backend, _ = inventory.backend_for(args.root)
        try:
            inv = inventory.build(args.root, backend)
            return metrics.collect(inv, backend if backend.name == "nvml" else None, args.root, args.log)
        finally:
            getattr(backend, "close", lambda: None)()
    if listen:
        metrics.serve(listen, render)
        return 0
    sys.stdout.write(render())
    return 0
