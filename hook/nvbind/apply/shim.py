"""`nvbind runtime ARGS…`: an OCI runtime shim for docker and containerd.

docker/containerd call their runtime as `RUNTIME [global options] VERB [options] [ID]`.
On `create` (and `run`) the shim edits the bundle's config.json exactly as precreate
would, writes it back atomically, then executes the real runtime with the original
arguments; every other verb goes straight to the real runtime. The real runtime is
`NVBIND_RUNTIME` (a path or a name on PATH), else runc.
"""

import os
import shutil
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


def real_runtime() -> str:
    want = os.environ.get("NVBIND_RUNTIME") or ""
    me = os.path.realpath(sys.executable if getattr(sys, "frozen", False) else sys.argv[0])
    for name in ([want] if want else []) + list(CANDIDATES):
        path = name if os.path.isabs(name) else shutil.which(name, path=os.environ.get("PATH")
                                                            or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        if path and os.access(path, os.X_OK) and os.path.realpath(path) != me:
            return path
    raise NvbindError(f"no real OCI runtime found (NVBIND_RUNTIME={want!r}, tried {', '.join(CANDIDATES)})")


def write_atomically(path: str, data: str) -> None:
    d = os.path.dirname(path) or "."
    tmp = os.path.join(d, f".config.json.nvbind-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.chmod(tmp, os.stat(path).st_mode & 0o777)
        except OSError:
            pass
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def edit_bundle(bundle: str, pipeline, result: dict) -> None:
    """Apply precreate's edits to <bundle>/config.json in place."""
    from nvbind import oci
    from nvbind.apply import spec
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            text = oci.read_stdin(f)
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    cfg = oci.parse_config(text, path)
    if "NVBIND_GPUS" in oci.env_map(cfg):
        result["note"] = "already injected"
        return None
    _req, _inv, ed = pipeline(cfg)
    if ed is None or ed.empty:
        return None
    result.update(gpus=ed.gpus, devices=[d.path for d in ed.devices])
    for note in spec.apply(cfg, ed):
        print(f"nvbind: {note}", file=sys.stderr)
    write_atomically(path, oci.dump(cfg) + "\n")
    return ed


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
