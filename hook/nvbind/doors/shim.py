"""`nvbind runtime ARGS…` (or `nvbind-runtime ARGS…`): an OCI runtime shim for docker and
containerd, a door like the hook stages.

docker/containerd call their runtime as `RUNTIME [global options] VERB [options] [ID]`.
On `create` (and `run`) the shim edits the bundle's config.json exactly as precreate
would, writes it back atomically, then executes the real runtime with the original
arguments; every other verb goes straight to the real runtime. The real runtime is
`NVBIND_RUNTIME` (a path or a name on PATH), else runc.
"""

import os
import sys

from nvbind.errors import InputError, NvbindError

# runc's global options that take a value (runc --help); booleans take none.
GLOBAL_WITH_VALUE = {"--root", "--log", "--log-format", "--criu", "--rootless"}
CANDIDATES = ("runc",)


def split(argv: list[str]) -> tuple[str | None, int]:
    """(verb, index of the verb) in a runtime command line."""
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            return (argv[i + 1], i + 1) if i + 1 < len(argv) else (None, -1)
        if a.startswith("-"):
            if a in GLOBAL_WITH_VALUE:
                i += 1
            i += 1
            continue
        return a, i
    return None, -1


def bundle_of(args: list[str]) -> str:
    """--bundle/-b of a create/run command line; the working directory by default."""
    it = iter(args)
    for a in it:
        if a in ("--bundle", "-b"):
            return next(it, ".")
        if a.startswith("--bundle="):
            return a.split("=", 1)[1]
    return "."


def _which(name: str, path: str) -> str | None:
    """shutil.which on POSIX, without importing shutil (it brings fnmatch, re, enum, bz2
    and lzma: milliseconds and memory on every shim create)."""
    def ok(fn):
        return os.path.exists(fn) and os.access(fn, os.X_OK) and not os.path.isdir(fn)
    if os.path.dirname(name):
        return name if ok(name) else None
    seen = set()
    for d in path.split(os.pathsep):
        if d not in seen:
            seen.add(d)
            if ok(os.path.join(d, name)):
                return os.path.join(d, name)
    return None


def real_runtime() -> str:
    want = os.environ.get("NVBIND_RUNTIME") or ""
    me = os.path.realpath(sys.executable if getattr(sys, "frozen", False) else sys.argv[0])
    # nor the exec front end beside it (packaging/frontend), which would call us again
    front = os.path.join(os.path.dirname(me), "nvbind-runtime")
    for name in ([want] if want else []) + list(CANDIDATES):
        path = name if os.path.isabs(name) else _which(name, os.environ.get("PATH")
                                                      or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        if path and os.access(path, os.X_OK) and os.path.realpath(path) not in (me, front):
            return path
    raise NvbindError(f"no real OCI runtime found (NVBIND_RUNTIME={want!r}, tried {', '.join(CANDIDATES)})")


def run(settings, rest: list[str]) -> int:
    """Edit the bundle on create/run (logged as a door), then exec the real runtime.

    On create the shim's stdio is the container's (containerd hands the container's fifos
    to the runtime, which passes them on): nothing nvbind says may go there. Notes go to
    nvbind's log entry; an error goes, as runc's own errors do, to the runtime's `--log`
    file, from which containerd's shim puts it into the error docker and the CRI return."""
    verb, i = split(rest)
    real = real_runtime()
    if verb in ("create", "run"):
        from nvbind.doors import logged
        bundle = os.path.abspath(bundle_of(rest[i + 1:]))
        settings.result.update(bundle=bundle, id=rest[-1] if len(rest) > i + 1 else None,
                               quiet=True)
        try:
            logged(settings, f"runtime {verb}", edit_bundle, bundle)
        except Exception as e:  # noqa: BLE001 - reported to the engine, never a traceback
            runc_log = global_value(rest, "--log")
            if not runc_log:
                raise
            msg = " ".join(str(e).split())
            if not isinstance(e, NvbindError):
                msg = f"internal: {type(e).__name__}: {msg}"
            report_error(runc_log, global_value(rest, "--log-format"), f"nvbind: error: {msg}")
            return e.exit_code if isinstance(e, NvbindError) else 1
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(real, [real, *rest])
    return 1  # not reached


def edit_bundle(settings, bundle: str) -> None:
    """Apply precreate's edits to <bundle>/config.json in place."""
    from nvbind import oci
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            text = oci.read_stdin(f)
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    if not oci.may_request(text):
        return None
    from nvbind import decide
    from nvbind.apply import spec
    from nvbind.doors import check_leases, host, record, self_command
    from nvbind.sysio import atomic
    cfg = oci.parse_config(text, path)
    d = decide.decide(settings, cfg, host(settings), lambda: self_command(settings))
    record(settings, d)
    if d.edits is None or d.edits.empty:
        return None
    check_leases(settings, d.edits)
    notes = spec.apply(cfg, d.edits)
    if notes:       # never on stderr: on create, the shim's stdio is the container's
        settings.result["notes"] = notes
    atomic.write(path, oci.dump(cfg) + "\n")
    return None


def global_value(argv: list[str], name: str) -> str | None:
    """The value of runc's global option `name` (`--log F` or `--log=F`) before the verb."""
    verb, i = split(argv)
    head = argv[:i] if verb is not None else argv
    it = iter(head)
    for a in it:
        if a == name:
            return next(it, None)
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def report_error(log_path: str, log_format: str | None, msg: str) -> None:
    """Write an error where the caller of an OCI runtime reads it: runc's `--log` file, as
    runc itself does (logrus; one JSON object a line with `--log-format json`).
    containerd's runc shim reads the last `"level":"error"` line of that file and puts its
    `msg` into the error docker and the CRI return (containerd-shim-runc-v2,
    getLastRuntimeError; its `time` must parse as RFC 3339)."""
    import time
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if log_format == "json":
        from nvbind import fastjson
        line = fastjson.dumps({"level": "error", "msg": msg, "time": now})
    else:
        line = 'time="%s" level=error msg="%s"' % (now, msg.replace("\\", "\\\\").replace('"', '\\"'))
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
