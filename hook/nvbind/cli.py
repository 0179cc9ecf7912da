"""Command line: verbs and argument parsing only. Everything else is imported lazily."""

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
               [--host-paths]    paths as the host sees them (--root is its / in a container)
  cdi list [--spec-dir D]...     CDI devices in /etc/cdi and /var/run/cdi
  cdi validate F                 official CDI schema + the rules it misses
  install --engine podman|crio|docker|containerd [--dest DIR]
  uninstall [--dest DIR]         remove exactly what install wrote, restore backups
  config validate [FILE] | show | import-surge FILE
  doctor [--json]                checks with pass/warn/fail and a fix each (exit 0/1/3)
  metrics [--listen [ADDR:]PORT] Prometheus text: GPUs (NVML), per container, hook counters
  plan --bundle DIR [--json]     what would be injected and why; changes nothing
  info [--json] [--refresh]      host inventory; --refresh rebuilds the hooks' cache (NVML)
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
    def cache_dir(self) -> str | None:
        """Inventory cache directory: NVBIND_CACHE_DIR, else the config's; "off" for none."""
        d = os.environ.get("NVBIND_CACHE_DIR") or self.settings["cache_dir"]
        return None if d in ("off", "") else d

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


def _wanted(args: Args, entry: dict) -> bool:
    """log_level: error logs failures only, warn also runs with warnings, info/debug all."""
    level = (args._settings or {}).get("log_level") or os.environ.get("NVBIND_LOG_LEVEL") or "info"
    if level == "error":
        return entry.get("outcome") != "ok"
    if level == "warn":
        return entry.get("outcome") != "ok" or "warning" in entry
    return True


def _logged(args: Args, stage: str, fn, rest) -> int:
    import time
    from nvbind import log
    t0 = time.monotonic()
    entry: dict = {"stage": stage}
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
        # the root as given; the configuration is read only where the stage needed it
        entry["root"] = args.root_opt or (args._settings or {}).get("root") or "/"
        entry.update(args.result, duration_ms=round((time.monotonic() - t0) * 1000, 2))
        if _wanted(args, entry):
            log.record(args.log, entry)


HOOK_STAGES = {"precreate": "cmd_precreate", "createContainer": "cmd_create_container",
               "createRuntime": "cmd_live", "prestart": "cmd_live", "poststop": "cmd_poststop"}
ADMIN = {"plan": "cmd_plan", "info": "cmd_info", "cdi": "cmd_cdi", "config": "cmd_config",
         "doctor": "cmd_doctor", "metrics": "cmd_metrics"}


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
        name = HOOK_STAGES.get(rest[0])
        if name is None:
            raise InputError(f"unsupported hook stage '{rest[0]}'; supported: {', '.join(HOOK_STAGES)}")
        from nvbind import hooks
        return _logged(args, rest[0], getattr(hooks, name), rest[1:])
    if verb == "runtime":
        from nvbind import hooks
        return hooks.cmd_runtime(args, rest)
    if verb in ADMIN:
        from nvbind import admin
        return getattr(admin, ADMIN[verb])(args, rest)
    if verb in ("install", "uninstall"):
        from nvbind import admin
        return admin.cmd_install(args, rest, remove=verb == "uninstall")
    raise InputError(f"unknown verb '{verb}' (see nvbind --help)")


def main(argv: list[str] | None = None) -> int:
    try:
        if argv is None and os.path.basename(sys.argv[0]) == "nvbind-runtime":
            # called by docker/containerd under the runtime's name: every argument is the
            # runtime's; nvbind's own settings come from NVBIND_ROOT / NVBIND_LOG
            from nvbind import hooks
            return hooks.cmd_runtime(Args([]), sys.argv[1:])
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
