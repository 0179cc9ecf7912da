"""Command line: verbs and argument parsing only. Everything else is imported lazily."""
from __future__ import annotations

import os
import sys

from nvbind.errors import InputError, NvbindError

USAGE = """usage: nvbind [--root DIR] VERB ...

verbs:
  hook precreate                 stdin: OCI config.json -> stdout: edited config.json
  hook createContainer [--folder DIR]... [--link TARGET::LINK]...
                                 stdin: OCI state; soname links + ld cache in the container
  hook createRuntime|prestart    stdin: OCI state; inject into the live container
  hook poststop                  stdin: OCI state; release what the container held
  runtime [RUNTIME ARGS...]      OCI runtime shim (docker, containerd): edits the bundle on
                                 create/run, then runs the real runtime (NVBIND_RUNTIME, runc)
  cdi generate [--output F] [--format json|yaml] [--capabilities LIST] [--watch SECONDS]
  cdi list [--spec-dir D]...     CDI devices in /etc/cdi and /var/run/cdi
  cdi validate F                 official CDI schema + the rules it misses
  install --engine podman|crio|docker|containerd [--dest DIR]
  uninstall [--dest DIR]         remove exactly what install wrote, restore backups
  config validate [FILE] | show | import-surge FILE
  plan --bundle DIR [--json]     what would be injected and why; changes nothing
  info [--json]                  host inventory
  --version
global options:
  --root DIR                     treat DIR as the host's / for discovery (env NVBIND_ROOT)
  --log FILE                     append one JSON line per hook run to FILE (env NVBIND_LOG;
                                 default /var/log/nvbind.log; "off" for none)
  --config FILE                  configuration (env NVBIND_CONFIG; default /etc/nvbind/config.toml)
"""


class Args:
    """Global options. Each setting: command line, then environment, then config file."""

    def __init__(self, argv: list[str]):
        self.root_opt = os.environ.get("NVBIND_ROOT") or None
        self.log_opt = os.environ.get("NVBIND_LOG")
        self.config_path = None
        self.result: dict = {}
        self._settings = None
        self.rest: list[str] = []
        it = iter(argv)
        for a in it:
            if a == "--root":
                self.root_opt = _next(it, a)
            elif a.startswith("--root="):
                self.root_opt = a.split("=", 1)[1]
            elif a == "--log":
                self.log_opt = _next(it, a)
            elif a == "--config":
                self.config_path = _next(it, a)
            elif a in ("-h", "--help"):
                self.rest = ["help"]
                return
            else:
                self.rest = [a, *it]
                break
        if self.root_opt == "":
            raise InputError("--root needs a directory")

    @property
    def settings(self) -> dict:
        if self._settings is None:
            from nvbind import config
            self._settings = config.load(self.config_path)
        return self._settings

    @property
    def root(self) -> str:
        return self.root_opt or self.settings["root"]

    @property
    def log(self) -> str | None:
        log = self.log_opt if self.log_opt is not None else self.settings["log_file"]
        return None if log in ("", "off", "-") else log


def _next(it, opt):
    try:
        return next(it)
    except StopIteration:
        raise InputError(f"{opt} needs a value") from None


def self_command(root: str, log: str | None = None, config: str | None = None) -> tuple[str, ...]:
    """How a hook entry calls this same nvbind: (path, argv0, global args...)."""
    if getattr(sys, "frozen", False):
        cmd = (sys.executable, "nvbind")
    else:
        argv0 = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
        if argv0 and not argv0.endswith(".py") and os.access(argv0, os.X_OK):
            cmd = (argv0, "nvbind")
        else:
            cmd = (sys.executable, "python3", "-m", "nvbind")
    if root != "/":
        cmd += ("--root", os.path.abspath(root))
    if log:
        cmd += ("--log", os.path.abspath(log))
    else:
        cmd += ("--log", "off")
    if config:
        cmd += ("--config", os.path.abspath(config))
    return cmd


def _pipeline(args: Args, cfg: dict, with_hook: bool = True, result: dict | None = None):
    """(request, inventory, edits) for a config; edits is None when nothing was asked.

    A container that asks for nothing costs one env scan: nothing else is imported."""
    from nvbind import oci, request
    settings = args.settings
    env, ann = oci.env_map(cfg), cfg.get("annotations") or {}
    req = request.from_config(env, ann, cfg, settings["sources"])
    if req.empty:
        return req, None, None
    from nvbind import edits, profiles
    from nvbind.host import inventory
    offered = set(settings["capabilities"])
    refused = [c for c in req.capabilities if c not in offered]
    if refused:
        raise InputError(f"capability {', '.join(refused)} is not offered on this host "
                         f"(configuration allows {', '.join(sorted(offered))})")
    name = (ann.get(request.ANN_PROFILE) if settings["sources"]["annotations"] else None) \
        or env.get("NVBIND_PROFILE")
    prof = profiles.resolve(name, settings)
    if result is not None:
        result["profile"] = prof.name
    inv = inventory.build(args.root, capabilities=prof.capabilities or req.capabilities,
                          mps_pipe_dir=settings["mps_pipe_dir"], mps_log_dir=settings["mps_log_dir"],
                          extra_devices=prof.devices)
    hook = self_command(args.root, args.log, args.config_path or os.environ.get("NVBIND_CONFIG")) \
        if with_hook else None
    return req, inv, edits.compute(inv, req, prof, hook)


def _take_leases(args: Args, ed, bundle: str, cid: str | None, hostname: str | None) -> None:
    if not ed.leases:
        return
    from nvbind import leases
    notes = leases.acquire(args.settings["lease_dir"], ed.leases,
                           {"bundle": os.path.abspath(bundle), "id": cid, "hostname": hostname})
    args.result["leases"] = ed.leases
    for n in notes:
        print(f"nvbind: {n}", file=sys.stderr)


def cmd_precreate(args: Args, rest: list[str]) -> int:
    from nvbind import oci
    if rest:
        raise InputError(f"hook precreate takes no arguments, got {rest[0]!r}")
    text = oci.read_stdin(sys.stdin.buffer)
    cfg = oci.parse_config(text, "config.json on stdin")
    if isinstance(cfg.get("hostname"), str):
        args.result["hostname"] = cfg["hostname"]
    _req, _inv, ed = _pipeline(args, cfg, result=args.result)
    if ed is None or ed.empty:
        sys.stdout.write(text)
        return 0
    args.result.update(gpus=ed.gpus, devices=[d.path for d in ed.devices])
    # podman runs precreate in the bundle directory, and poststop's state names it
    _take_leases(args, ed, os.getcwd(), None, cfg.get("hostname"))
    from nvbind.apply import spec
    for note in spec.apply(cfg, ed):
        print(f"nvbind: {note}", file=sys.stderr)
    sys.stdout.write(oci.dump(cfg))
    sys.stdout.write("\n")
    return 0


def cmd_create_container(args: Args, rest: list[str]) -> int:
    from nvbind import oci
    from nvbind.apply import ldcache
    folders, links, driver = [], [], None
    it = iter(rest)
    for a in it:
        if a == "--folder":
            folders.append(_next(it, a))
        elif a == "--driver-version":
            driver = _next(it, a)
        elif a == "--link":
            target, sep, link = _next(it, a).partition("::")
            if not sep or not target or not link.startswith("/"):
                raise InputError(f"--link wants TARGET::/ABS/LINK, got {target}{sep}{link}")
            links.append((target, link))
        else:
            raise InputError(f"hook createContainer: unknown argument {a!r}")
    state = oci.parse_state(oci.read_stdin(sys.stdin.buffer))
    args.result["id"] = state["id"]
    _cfg, rootfs = oci.load_bundle(state["bundle"])
    ldcache.make_links(rootfs, links)
    if folders:
        from nvbind.apply import compat
        folders = compat.prepare(rootfs, driver, folders)
        if folders[0] == compat.COMPAT_DIR:
            args.result["cuda_compat"] = compat.COMPAT_DIR
        ldcache.update(rootfs, folders, args.settings.get("ldconfig") or None)
    return 0


def cmd_live(args: Args, rest: list[str]) -> int:
    """createRuntime / prestart: inject into the container the runtime has just built."""
    from nvbind import oci
    if rest:
        raise InputError(f"this hook stage takes no arguments, got {rest[0]!r}")
    state = oci.parse_state(oci.read_stdin(sys.stdin.buffer))
    args.result["id"] = state["id"]
    cfg, rootfs = oci.load_bundle(state["bundle"])
    if "NVBIND_GPUS" in oci.env_map(cfg):
        args.result["note"] = "already injected at precreate"
        return 0
    _req, inv, ed = _pipeline(args, cfg, with_hook=False, result=args.result)
    if ed is None or ed.empty:
        return 0
    args.result.update(gpus=ed.gpus, devices=[d.path for d in ed.devices])
    _take_leases(args, ed, state["bundle"], state["id"], cfg.get("hostname"))
    not_applied = [e.name for e in ed.env]
    if not_applied:
        args.result["env_not_applied"] = not_applied
        print(f"nvbind: note: {', '.join(not_applied)} cannot be set at this stage (the process "
              "environment is fixed); use precreate, the runtime shim or CDI for them",
              file=sys.stderr)
    from nvbind.apply import live
    args.result["done"] = live.apply(state, rootfs, ed,
                                     inv.driver_version if "compute" in _caps(ed) else None,
                                     args.settings.get("ldconfig") or None)
    return 0


def _caps(ed) -> set:
    return set(next((e.value for e in ed.env if e.name == "NVBIND_CAPABILITIES"), "").split(","))


def cmd_poststop(args: Args, rest: list[str]) -> int:
    """Release what the container held (exclusive GPU leases). Safe to call twice, for a
    container nvbind never touched, or with a state it cannot read (poststop failures are
    only warnings for the engine anyway)."""
    from nvbind import leases, oci
    data = oci.read_stdin(sys.stdin.buffer)
    try:
        state = oci.parse_state(data)
    except InputError as e:
        args.result["note"] = f"unreadable state ignored: {e}"
        return 0
    args.result["id"] = state["id"]
    released = leases.release(args.settings["lease_dir"], os.path.abspath(state["bundle"]))
    if released:
        args.result["released"] = released
    return 0


def cmd_runtime(args: Args, rest: list[str]) -> int:
    """OCI runtime shim: edit the bundle on create/run, then exec the real runtime."""
    from nvbind.apply import shim
    verb, i = shim.split(rest)
    real = shim.real_runtime()
    if verb in ("create", "run"):
        bundle = os.path.abspath(shim.bundle_of(rest[i + 1:]))
        t0 = _now()
        entry: dict = {"stage": f"runtime {verb}", "root": args.root, "bundle": bundle,
                       "id": rest[-1] if len(rest) > i + 1 else None}
        try:
            ed = shim.edit_bundle(bundle, lambda cfg: _pipeline(args, cfg, result=entry), entry)
            if ed is not None:
                _take_leases(args, ed, bundle, entry["id"], None)
            entry["outcome"] = "ok"
        except NvbindError as e:
            entry.update(outcome="error", error=" ".join(str(e).split()))
            raise
        finally:
            entry["duration_ms"] = round((_now() - t0) * 1000, 2)
            from nvbind import log
            log.record(args.log, entry)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(real, [real, *rest])
    return 1  # not reached


def _now() -> float:
    import time
    return time.monotonic()


def _cdi_text(args: Args, capabilities, fmt: str) -> str:
    import json
    from nvbind.apply import cdi
    from nvbind.host import inventory
    inv = inventory.build(args.root, capabilities=capabilities)
    if inv.driver_version is None:
        raise NvbindError("no NVIDIA driver found: nothing to describe")
    spec = cdi.generate(inv, capabilities, self_command(args.root, args.log, args.config_path))
    return (json.dumps(spec, indent=2) if fmt == "json" else cdi.to_yaml(spec)) + "\n"


def cmd_cdi(args: Args, rest: list[str]) -> int:
    import json
    from nvbind.apply import cdi
    if not rest:
        raise InputError("cdi needs a verb: generate, list, validate")
    verb, rest = rest[0], rest[1:]
    if verb == "generate":
        output, fmt, caps, watch = None, None, "utility,compute", None
        it = iter(rest)
        for a in it:
            if a == "--watch":
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
                text = _cdi_text(args, capabilities, fmt)
            except NvbindError:
                if watch is None:
                    raise
                text = None     # no driver right now: keep the last spec, look again later
            if text is not None and text != last:
                if output:
                    from nvbind.apply.shim import write_atomically
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
    return install.main(dest, engines, remove)


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
    as_json = False
    for a in rest:
        if a == "--json":
            as_json = True
        else:
            raise InputError(f"info: unknown argument {a!r}")
    backend, note = inventory.backend_for(args.root)
    try:
        inv = inventory.build(args.root, backend)
    finally:
        getattr(backend, "close", lambda: None)()
    if note:
        inv.notes.insert(0, note)
    if as_json:
        print(json.dumps(inv.to_json(), indent=2, sort_keys=True))
    else:
        from nvbind import render
        print(render.info(inv))
    return 0


def _logged(args: Args, stage: str, fn, rest) -> int:
    import time
    from nvbind import log
    t0 = time.monotonic()
    entry: dict = {"stage": stage, "root": args.root}
    try:
        rc = fn(args, rest)
        entry["outcome"] = "ok"
        return rc
    except NvbindError as e:
        entry.update(outcome="error", error=" ".join(str(e).split()))
        raise
    except Exception as e:
        entry.update(outcome="error", error=f"internal: {type(e).__name__}: {e}")
        raise
    finally:
        entry.update(args.result, duration_ms=round((time.monotonic() - t0) * 1000, 2))
        log.record(args.log, entry)


HOOK_STAGES = {"precreate": cmd_precreate, "createContainer": cmd_create_container,
               "createRuntime": cmd_live, "prestart": cmd_live, "poststop": cmd_poststop}


def run(argv: list[str]) -> int:
    args = Args(argv)
    if not args.rest or args.rest[0] == "help":
        sys.stdout.write(USAGE)
        return 0 if args.rest else 2
    verb, rest = args.rest[0], args.rest[1:]
    if verb == "--version":
        from nvbind import __version__
        print(f"nvbind {__version__}")
        return 0
    if verb == "hook":
        if not rest:
            raise InputError("hook needs a stage: " + ", ".join(HOOK_STAGES))
        fn = HOOK_STAGES.get(rest[0])
        if fn is None:
            raise InputError(f"unsupported hook stage '{rest[0]}'; supported: {', '.join(HOOK_STAGES)}")
        return _logged(args, rest[0], fn, rest[1:])
    if verb == "plan":
        return cmd_plan(args, rest)
    if verb == "runtime":
        return cmd_runtime(args, rest)
    if verb == "cdi":
        return cmd_cdi(args, rest)
    if verb == "config":
        return cmd_config(args, rest)
    if verb in ("install", "uninstall"):
        return cmd_install(args, rest, remove=verb == "uninstall")
    if verb == "info":
        return cmd_info(args, rest)
    raise InputError(f"unknown verb '{verb}' (see nvbind --help)")


def main(argv: list[str] | None = None) -> int:
    try:
        if argv is None and os.path.basename(sys.argv[0]) == "nvbind-runtime":
            # called by docker/containerd under the runtime's name: every argument is the
            # runtime's; nvbind's own settings come from NVBIND_ROOT / NVBIND_LOG
            return cmd_runtime(Args([]), sys.argv[1:])
        return run(sys.argv[1:] if argv is None else argv)
    except NvbindError as e:
        msg = " ".join(str(e).split())
        print(f"nvbind: error: {msg}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except Exception as e:  # noqa: BLE001 - one clean line, never a traceback, for engines
        print(f"nvbind: error: internal: {type(e).__name__}: {' '.join(str(e).split())}",
              file=sys.stderr)
        if os.environ.get("NVBIND_DEBUG"):
            raise
        return 1
