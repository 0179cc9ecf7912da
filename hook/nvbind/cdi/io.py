"""Reading and writing CDI specs: JSON, and YAML through PyYAML (safe_load / safe_dump)."""

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
    import json
    try:
        return json.loads(data)
    except ValueError as e:
        raise InputError(f"{path} is not valid JSON: {e}") from None


def dumps(spec: dict, fmt: str) -> str:
    """YAML (block style), or compact JSON: the C encoder alone (json.dumps with an indent
    runs the pure-Python one, and importing json brings re: ~5 ms of a `cdi generate`)."""
    if fmt == "yaml":
        import yaml
        return yaml.safe_dump(spec, sort_keys=False, default_flow_style=False)
    from nvbind import fastjson
    return fastjson.dumps(spec) + "\n"
