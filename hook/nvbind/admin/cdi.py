"""`nvbind cdi generate|list|validate`."""

import os
import sys

from nvbind.errors import InputError, NvbindError

SPEC_DIRS = ["/etc/cdi", "/var/run/cdi"]


def _text(settings, capabilities, fmt: str) -> str:
    from nvbind.cdi import generate, io
    from nvbind.doors import self_command
    from nvbind.host import inventory
    inv = inventory.cached(settings.root, settings.cache_dir)
    if inv.driver_version is None:
        raise NvbindError("no NVIDIA driver found: nothing to describe")
    return io.dumps(generate.generate(settings, inv, capabilities, self_command(settings)), fmt)


def _output_path(root: str, output: str) -> str:
    """Where `cdi generate --output` writes, its directory created if missing. An output
    under --root is resolved inside the root: the DaemonSet writes /host/var/run/cdi/...
    and /var/run is a link to /run, which must mean the node's /run (/host/run), not the
    /run of the container nvbind runs in."""
    out = os.path.abspath(output)
    r = root.rstrip("/")
    if not (r and out.startswith(r + "/")):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        return out
    from nvbind.sysio import root as fsroot
    cur = ""
    for name in [p for p in os.path.dirname(out[len(r):]).split("/") if p]:
        nxt = fsroot.resolve(root, f"{cur}/{name}")
        if nxt is None:
            nxt = f"{cur}/{name}"
            os.mkdir(r + nxt, 0o755)
        cur = nxt.rstrip("/")
    return f"{r}{cur}/{os.path.basename(out)}"


def generate(settings, ns) -> int:
    from nvbind.core import request
    from nvbind.sysio import atomic
    output = ns.output
    fmt = ns.format or ("yaml" if output and output.endswith((".yaml", ".yml")) else "json")
    capabilities = request.parse_capabilities(ns.capabilities, "--capabilities", False)
    if ns.watch is not None and not output:
        raise InputError("--watch needs --output")
    last = None
    while True:
        try:
            text = _text(settings, capabilities, fmt)
        except NvbindError:
            if ns.watch is None:
                raise
            text = None     # no driver right now: keep the last spec, look again later
        if text is not None and text != last:
            if output:
                path = _output_path(settings.root, output)
                atomic.write(path, text, 0o644)
                print(f"wrote {path}", file=sys.stderr)
            else:
                sys.stdout.write(text)
            last = text
        if ns.watch is None:
            return 0
        import time
        time.sleep(ns.watch)    # regenerate: a driver update changes version, files, nodes


def validate(settings, ns) -> int:
    from nvbind.cdi import io, validate as check
    errors = check.validate(io.load(ns.file))
    for e in errors:
        print(f"{ns.file}: {e}")
    if errors:
        raise InputError(f"{ns.file}: {len(errors)} problem(s), see above")
    print(f"{ns.file}: valid")
    return 0


def list_(settings, ns) -> int:
    from nvbind.cdi import io
    for d in ns.spec_dir or SPEC_DIRS:
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for n in names:
            if not n.endswith((".json", ".yaml", ".yml")):
                continue
            try:
                spec = io.load(os.path.join(d, n))
            except InputError as e:
                print(f"nvbind: warning: {e}", file=sys.stderr)
                continue
            for dev in spec.get("devices") or []:
                print(f"{spec.get('kind')}={dev.get('name')}")
    return 0


def main(settings, ns) -> int:
    return {"generate": generate, "validate": validate, "list": list_}[ns.cdi_verb](settings, ns)
