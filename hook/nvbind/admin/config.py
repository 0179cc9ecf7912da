"""`nvbind config validate|show|import-surge`."""

import json
import os
import sys

from nvbind.errors import InputError


def main(settings, ns) -> int:
    from nvbind import settings as conf_mod
    if ns.config_verb == "validate":
        path = os.path.abspath(ns.file or settings.config_file or conf_mod.DEFAULT_PATH)
        try:
            with open(path, "rb") as f:
                conf_mod.parse(path, f.read(1 << 20))
        except OSError as e:
            raise InputError(f"cannot read {path}: {e.strerror}") from None
        print(f"{path}: valid")
        return 0
    if ns.config_verb == "show":
        from nvbind.core import profiles
        shown = dict(settings.config)
        shown["profiles"] = {n: (shown["profiles"].get(n) or profiles.BUILTIN[n])
                             for n in profiles.known(shown)}
        print(json.dumps(shown, indent=2, sort_keys=True))
        return 0
    import tomllib
    from nvbind.admin import surge
    try:
        with open(ns.file, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise InputError(f"cannot read {ns.file}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{ns.file}: not valid TOML: {e}") from None
    out, notes = surge.convert(doc, ns.file)
    errors = conf_mod.schema_errors(out)
    if errors:
        raise InputError(f"{ns.file}: the converted profiles are not valid: {'; '.join(errors)}")
    for n in notes:
        print(f"nvbind: {n}", file=sys.stderr)
    sys.stdout.write(surge.to_toml(out))
    return 0
