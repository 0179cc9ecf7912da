"""`nvbind runtime ARGS…` (or `nvbind-runtime ARGS…`): an OCI runtime shim for docker and
containerd, a door like the hook stages.

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


def run(settings, rest: list[str]) -> int:
    """Edit the bundle on create/run (logged as a door), then exec the real runtime."""
    verb, i = split(rest)
    real = real_runtime()
    if verb in ("create", "run"):
        from nvbind.doors import logged
        bundle = os.path.abspath(bundle_of(rest[i + 1:]))
        settings.result.update(bundle=bundle, id=rest[-1] if len(rest) > i + 1 else None)
        logged(settings, f"runtime {verb}", edit_bundle, bundle)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(real, [real, *rest])
    return 1  # not reached


def edit_bundle(settings, bundle: str) -> None:
    """Apply precreate's edits to <bundle>/config.json in place."""
    from nvbind import decide, oci
    from nvbind.apply import spec
    from nvbind.doors import check_leases, host, record, self_command
    from nvbind.sysio import atomic
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            text = oci.read_stdin(f)
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    if not oci.may_request(text):
        return None
    cfg = oci.parse_config(text, path)
    d = decide.decide(settings, cfg, host(settings), lambda: self_command(settings))
    record(settings, d)
    if d.edits is None or d.edits.empty:
        return None
    check_leases(settings, d.edits)
    for note in spec.apply(cfg, d.edits):
        print(f"nvbind: {note}", file=sys.stderr)
    atomic.write(path, oci.dump(cfg) + "\n")
    return None
