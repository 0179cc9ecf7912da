"""Command line: which verb, nothing else. Hook stages and the shim are parsed by hand (the
hot path imports no argparse); the admin verbs use argparse (nvbind.admin)."""

import sys

from nvbind.early import getenv
from nvbind.errors import InputError, NvbindError

USAGE = """usage: nvbind [--root DIR] [--config FILE] [--log FILE] VERB ...

container start (engines call these):
  hook precreate                 stdin: OCI config.json -> stdout: edited config.json
  hook createRuntime|prestart    stdin: OCI state; inject into the live container
  hook createContainer ...       stdin: OCI state; soname links + ld cache in the container
  hook poststop                  stdin: OCI state; release what the container held
  runtime [RUNTIME ARGS...]      OCI runtime shim (docker, containerd); also as nvbind-runtime

admin (nvbind VERB --help for each):
  plan --bundle DIR [--json]     what a container would get, and why; changes nothing
  info [--json] [--refresh]      host inventory; --refresh rebuilds the hooks' cache (NVML)
  cdi generate|list|validate     CDI specs (podman, CRI-O, containerd >= 1.7, Kubernetes)
  install --engine E [--dest D]  register with podman, crio, docker or containerd
  uninstall [--dest DIR]         remove exactly what install wrote, restore backups
  config validate|show|import-surge
  doctor [--json]                checks with pass/warn/fail and a fix each (exit 0/1/3)
  metrics [--listen [ADDR:]PORT] Prometheus text: GPUs (NVML), per container, hook counters
  device-plugin [--plugin-dir D] [--dry-run]
                                 Kubernetes device plugin (kubelet API v1beta1, gRPC)
  --version

global options:
  --root DIR     treat DIR as the host's / for discovery (env NVBIND_ROOT)
  --config FILE  configuration (env NVBIND_CONFIG; default /etc/nvbind/config.toml)
  --log FILE     one JSON line per hook run (env NVBIND_LOG; default /var/log/nvbind.log;
                 "off" for none)

no GPU here? build the sample host and point nvbind at it:
  make demo     (or: sudo python3 tools/simhost.py /tmp/simhost; nvbind --root /tmp/simhost ...)
"""

HOOK_STAGES = {"precreate": "precreate", "createContainer": "create_container",
               "createRuntime": "live", "prestart": "live", "poststop": "poststop"}


def run(argv: list[str]) -> int:
    from nvbind.settings import Settings
    settings = Settings(argv)
    if not settings.rest or settings.rest[0] == "help":
        (sys.stdout if settings.rest else sys.stderr).write(USAGE)
        return 0 if settings.rest else 2
    verb, rest = settings.rest[0], settings.rest[1:]
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
        from nvbind.doors import logged
        if name == "precreate":
            from nvbind.doors import precreate as door
        elif name == "live":
            from nvbind.doors import live as door
        elif name == "poststop":
            from nvbind.doors import poststop as door
        else:
            from nvbind.doors import create_container as door
        rc = logged(settings, rest[0], door.run, rest[1:])
        if rc == 0 and settings.then is not None:
            settings.then()         # createContainer: becomes ldconfig (never returns)
        return rc
    if verb == "runtime":
        from nvbind.doors import shim
        return shim.run(settings, rest)
    import gc
    gc.enable()         # off for the hooks and the shim in the frozen program (frozen.py)
    from nvbind import admin
    return admin.main(settings, verb, rest)


def main(argv: list[str] | None = None) -> int:
    try:
        if argv is None and sys.argv[0].rpartition("/")[2] == "nvbind-runtime":
            # called by docker/containerd under the runtime's name: every argument is the
            # runtime's; nvbind's own settings come from NVBIND_ROOT / NVBIND_LOG
            from nvbind.doors import shim
            from nvbind.settings import Settings
            return shim.run(Settings([]), sys.argv[1:])
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
        if getenv("NVBIND_DEBUG"):
            raise
        return 1
