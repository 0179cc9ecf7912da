"""The admin verbs' argparse parser (nvbind.admin.main builds it for the verb given)."""

import argparse
import sys

from nvbind.errors import InputError


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, with the width worked out as shutil.get_terminal_size does
    it (COLUMNS, else the terminal, else 80) without importing shutil (and bz2, lzma):
    argparse makes a formatter for every add_argument."""

    def __init__(self, prog, indent_increment=2, max_help_position=24, width=None):
        if width is None:
            import os
            try:
                width = int(os.environ.get("COLUMNS", 0))
            except ValueError:
                width = 0
            if width <= 0:
                try:
                    width = os.get_terminal_size(sys.__stdout__.fileno()).columns
                except (AttributeError, ValueError, OSError):
                    width = 0
            width = (width or 80) - 2
        super().__init__(prog, indent_increment, max_help_position, width)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *a, **kw):
        kw.setdefault("formatter_class", _Formatter)
        super().__init__(*a, **kw)

    def error(self, message):
        raise InputError(f"{self.prog}: {message} (see {self.prog} --help)")


def parser(only: str | None = None) -> argparse.ArgumentParser:
    """The admin parser; `only`: build just that verb's subparser (each one costs argparse's
    help-text translations: building all of them took ~15 ms of a `cdi generate`)."""
    top = _Parser(prog="nvbind", add_help=False)
    # prog given: argparse would otherwise make a help formatter to work it out, which
    # imports shutil (and with it bz2, lzma): ~2 ms of every admin verb
    real = top.add_subparsers(dest="verb", parser_class=_Parser, prog="nvbind")

    class _Only:     # add_parser for the wanted verb; a throwaway parser for the others
        def add_parser(self, name, **kw):
            if only is None or name == only:
                return real.add_parser(name, **kw)
            return _Skip()

    class _Skip:
        def __getattr__(self, _name):
            return lambda *a, **kw: self

    sub = _Only()

    p = sub.add_parser("plan", help="what a container would get, and why; changes nothing")
    p.add_argument("--bundle", required=True, metavar="DIR", help="OCI bundle (config.json)")
    p.add_argument("--json", action="store_true", help="machine-readable (schemas/plan.schema.json)")

    p = sub.add_parser("info", help="host inventory")
    p.add_argument("--json", action="store_true")
    p.add_argument("--refresh", action="store_true", help="rebuild the hooks' cache (NVML)")

    cdi = sub.add_parser("cdi", help="CDI specs").add_subparsers(dest="cdi_verb", required=True,
                                                                  parser_class=_Parser, prog="nvbind cdi")
    p = cdi.add_parser("generate", help="write the spec for this host")
    p.add_argument("--output", metavar="FILE")
    p.add_argument("--format", choices=("json", "yaml"))
    from nvbind.admin import CDI_CAPABILITIES
    p.add_argument("--capabilities", default=CDI_CAPABILITIES, metavar="LIST")
    p.add_argument("--watch", type=float, metavar="SECONDS",
                   help="keep --output current, looking again every SECONDS")
    p = cdi.add_parser("list", help="CDI devices in the spec directories")
    p.add_argument("--spec-dir", action="append", metavar="DIR",
                   help="default: /etc/cdi and /var/run/cdi")
    p = cdi.add_parser("validate", help="official CDI schema + the reference library's rules")
    p.add_argument("file")

    p = sub.add_parser("install", help="register with an engine")
    p.add_argument("--engine", action="append", required=True,
                   help="podman, crio, docker, containerd (repeat or comma-separate)")
    p.add_argument("--dest", default="/", metavar="DIR")
    p = sub.add_parser("uninstall", help="remove exactly what install wrote")
    p.add_argument("--dest", default="/", metavar="DIR")

    cfg = sub.add_parser("config", help="the configuration").add_subparsers(
        dest="config_verb", required=True, parser_class=_Parser, prog="nvbind config")
    p = cfg.add_parser("validate", help="check a configuration file")
    p.add_argument("file", nargs="?")
    cfg.add_parser("show", help="the configuration in force, profiles included")
    p = cfg.add_parser("import-surge", help="convert a seed/surge service file to profiles")
    p.add_argument("file")

    p = sub.add_parser("doctor", help="checks with pass/warn/fail and a fix each")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("metrics", help="Prometheus text")
    p.add_argument("--listen", metavar="[ADDR:]PORT")

    p = sub.add_parser("device-plugin", help="Kubernetes device plugin (kubelet API v1beta1)")
    p.add_argument("--plugin-dir", default="/var/lib/kubelet/device-plugins", metavar="DIR")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be advertised (JSON) and exit; no gRPC")
    return top
