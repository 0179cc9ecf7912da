"""Administrative verbs (never on a hook path): argparse, as users expect of such tools
(nvbind.admin.args).

Each verb is one function taking (settings, parsed arguments). Usage errors exit 2 with
argparse's own message; nvbind's errors are the usual one line `nvbind: error: ...`.

`cdi generate`, which the DaemonSet and package scripts run and which is measured against
`nvidia-ctk cdi generate`, skips argparse (its import brings re, gettext and locale: ~6 ms)
when its arguments are the plain ones; anything else (help, an abbreviation, a bad value)
goes to argparse, whose answer is the one that counts: tests/unit/test_cli.py holds the
two to the same namespace.
"""

import sys

from nvbind.errors import InputError

VERBS = ("plan", "info", "cdi", "install", "uninstall", "config", "doctor", "metrics",
         "device-plugin")



CDI_CAPABILITIES = "utility,compute"     # cdi generate's default (args.py uses it too)
_CDI_GENERATE = {"--output": None, "--format": None, "--capabilities": CDI_CAPABILITIES,
                 "--watch": None}


def _cdi_generate(rest: list[str]):
    """`cdi generate` with only its own options spelled out (`--opt VALUE`, `--opt=VALUE`),
    as the namespace argparse would give; None for anything else."""
    if not rest or rest[0] != "generate":
        return None
    got = dict(_CDI_GENERATE)
    it = iter(rest[1:])
    for a in it:
        opt, eq, value = a.partition("=")
        if opt not in got:
            return None
        if not eq:
            value = next(it, None)
            if value is None or value.startswith("-"):
                return None
        # each occurrence checked as argparse checks it, even one a later one replaces
        if opt == "--format" and value not in ("json", "yaml"):
            return None
        if opt == "--watch":
            try:
                value = float(value)
            except ValueError:
                return None
        got[opt] = value
    from types import SimpleNamespace
    return SimpleNamespace(verb="cdi", cdi_verb="generate",
                           **{k[2:]: v for k, v in got.items()})


def main(settings, verb: str, rest: list[str]) -> int:
    if verb not in VERBS:
        raise InputError(f"unknown verb '{verb}' (see nvbind --help)")
    ns = _cdi_generate(rest) if verb == "cdi" else None
    if ns is None:
        from nvbind.admin.args import parser
        ns = parser(verb).parse_args([verb, *rest])
    if verb in ("plan", "info"):
        from nvbind.admin import plan
        return getattr(plan, verb)(settings, ns)
    if verb == "cdi":
        from nvbind.admin import cdi
        return cdi.main(settings, ns)
    if verb in ("install", "uninstall"):
        from nvbind.admin import install
        engines = [e for v in getattr(ns, "engine", None) or [] for e in v.split(",") if e]
        # a --root / --log given to install is written into every hook entry's env
        return install.main(ns.dest, engines, verb == "uninstall", settings.root_opt,
                            settings.log_opt)
    if verb == "config":
        from nvbind.admin import config
        return config.main(settings, ns)
    if verb == "doctor":
        from nvbind.admin import doctor
        return doctor.main(settings, ns)
    if verb == "metrics":
        from nvbind.admin import metrics
        return metrics.main(settings, ns)
    if verb == "device-plugin":
        try:
            from nvbind.k8s import plugin
        except ImportError as e:
            raise InputError(f"device-plugin is not available in this build: {e}") from None
        return plugin.main(settings, ns)
    print(f"nvbind: {verb}: not handled", file=sys.stderr)
    return 1
