"""Reading and writing CDI specs: JSON, and YAML through PyYAML (safe_load / safe_dump)."""

import json

from nvbind.errors import InputError


def load(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            data = f.read(16 << 20)
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    if path.endswith((".yaml", ".yml")):
        import yaml
        try:
            return yaml.safe_load(data)
        except yaml.YAMLError as e:
            raise InputError(f"{path} is not valid YAML: {' '.join(str(e).split())}") from None
    try:
        return json.loads(data)
    except ValueError as e:
        raise InputError(f"{path} is not valid JSON: {e}") from None


def dumps(spec: dict, fmt: str) -> str:
    if fmt == "yaml":
        import yaml
        return yaml.safe_dump(spec, sort_keys=False, default_flow_style=False)
    return json.dumps(spec, indent=2) + "\n"
