"""A CDI spec written from inside a container for the host it runs on.

The Kubernetes DaemonSet runs `nvbind --root /host cdi generate`: discovery reads the
node through its hostPath mount at /host, but the spec is read by the node's own runtime,
to which /host means nothing. `host_paths(spec, root)` rewrites every path under root as
the node sees it (`/host/dev/nvidia0` -> `/dev/nvidia0`) and drops `--root ROOT` from the
hook commands (on the node, nvbind's root is /). Paths not under root (the hook program,
installed at the same path on the node by `nvbind install`) are left as they are.
"""
from __future__ import annotations


def host_paths(spec, root: str):
    root = root.rstrip("/")
    if not root:
        return spec

    def fix(v):
        if isinstance(v, str):
            if v == root:
                return "/"
            if v.startswith(root + "/"):
                return v[len(root):]
            return v
        if isinstance(v, list):
            return [fix(x) for x in v]
        if isinstance(v, dict):
            out = {}
            for k, x in v.items():
                if k == "args" and isinstance(x, list):
                    x = _drop_root(x, root)
                out[k] = fix(x)
            return out
        return v

    return fix(spec)


def _drop_root(args: list, root: str) -> list:
    out, skip = [], False
    for i, a in enumerate(args):
        if skip:
            skip = False
            continue
        if a == "--root" and i + 1 < len(args) and str(args[i + 1]).rstrip("/") == root:
            skip = True
            continue
        if a in (f"--root={root}", f"--root={root}/"):
            continue
        out.append(a)
    return out
