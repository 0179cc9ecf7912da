"""Reading what the engine hands us: OCI config.json, OCI state, bundles."""

import os

from nvbind import fastjson
from nvbind.errors import InputError

# Hook stdin is small (a config is a few KiB); refuse absurd input instead of
# buffering it all.
MAX_INPUT = 16 * 1024 * 1024


STDIN_TIMEOUT = 10.0   # seconds for the whole document; runtimes write it at once


def read_stdin(stream, timeout: float | None = None) -> str:
    """The whole of `stream` (stdin or a file), at most MAX_INPUT bytes, as UTF-8 text.

    From a pipe or terminal the read is bounded in time too: a writer that trickles bytes
    or never closes gets an error after `timeout` seconds (NVBIND_STDIN_TIMEOUT)."""
    import stat as _stat
    fd = stream.fileno() if hasattr(stream, "fileno") else None
    if fd is not None and not _stat.S_ISREG(os.fstat(fd).st_mode):
        data = _read_fd(fd, timeout if timeout is not None else
                        float(os.environ.get("NVBIND_STDIN_TIMEOUT") or STDIN_TIMEOUT))
    else:
        data = stream.read(MAX_INPUT + 1)
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    if len(data) > MAX_INPUT:
        raise InputError(f"input is larger than {MAX_INPUT} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"input is not UTF-8: {e.reason} at byte {e.start}") from None


def _read_fd(fd: int, timeout: float) -> bytes:
    import select
    import time
    deadline = time.monotonic() + timeout
    chunks, size = [], 0
    while size <= MAX_INPUT:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise InputError(f"stdin was not complete after {timeout:g} s")
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _load_object(text: str, what: str) -> dict:
    try:
        obj = fastjson.loads(text)
    except (ValueError, RecursionError) as e:
        raise InputError(f"{what} is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise InputError(f"{what} must be a JSON object, got {type(obj).__name__}")
    return obj


def parse_config(text: str, what: str = "config.json") -> dict:
    """An OCI runtime config, with the parts nvbind reads checked for shape."""
    cfg = _load_object(text, what)
    proc = cfg.get("process")
    if not isinstance(proc, dict):
        raise InputError(f"{what} has no 'process' object")
    env = proc.get("env", [])
    if not isinstance(env, list) or not all(isinstance(e, str) for e in env):
        raise InputError(f"{what}: process.env must be a list of strings")
    root = cfg.get("root")
    if not isinstance(root, dict) or not isinstance(root.get("path"), str) or not root["path"]:
        raise InputError(f"{what} has no 'root.path'")
    ann = cfg.get("annotations", {})
    if ann is None:
        ann = {}
    if not isinstance(ann, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in ann.items()
    ):
        raise InputError(f"{what}: annotations must map strings to strings")
    for key in ("mounts",):
        if key in cfg and not isinstance(cfg[key], list):
            raise InputError(f"{what}: '{key}' must be a list")
    linux = cfg.get("linux", {})
    if not isinstance(linux, dict):
        raise InputError(f"{what}: 'linux' must be an object")
    return cfg


# Every string through which a config can ask for a GPU (request.py): the env keys,
# nvbind's annotations, NVIDIA's volume-mount convention.
TRIGGERS = ("NVIDIA_VISIBLE_DEVICES", "CUDA_VERSION", "nvbind.io/", "nvidia-container-devices")


def may_request(text: str) -> bool:
    """False only when `text` certainly asks for nothing (request.from_config agrees).
    The triggers hold only letters, digits, '_', '-', '.' and '/': of JSON's escapes only
    \\uXXXX and \\/ can spell one of those, so either one sends the text the slow way."""
    return "\\u" in text or "\\/" in text or any(t in text for t in TRIGGERS)


def parse_state(text: str) -> dict:
    """An OCI state. Lenient: unknown status, extra fields and a missing pid are fine."""
    st = _load_object(text, "OCI state")
    for key in ("id", "bundle"):
        if not isinstance(st.get(key), str) or not st[key]:
            raise InputError(f"OCI state has no '{key}'")
    if not os.path.isabs(st["bundle"]):
        raise InputError(f"OCI state: bundle '{st['bundle']}' is not an absolute path")
    pid = st.get("pid")
    if pid is not None and (not isinstance(pid, int) or isinstance(pid, bool) or pid < 0):
        raise InputError(f"OCI state: pid must be a non-negative integer, got {pid!r}")
    ann = st.get("annotations") or {}
    if not isinstance(ann, dict):
        raise InputError("OCI state: annotations must be an object")
    st["annotations"] = ann
    return st


def load_bundle(bundle: str) -> tuple[dict, str]:
    """(config, absolute rootfs path) of a bundle directory."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            text = read_stdin(f)
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    cfg = parse_config(text, path)
    return cfg, rootfs_path(bundle, cfg)


def rootfs_path(bundle: str, cfg: dict) -> str:
    root = cfg["root"]["path"]
    return os.path.normpath(root if os.path.isabs(root) else os.path.join(bundle, root))


def env_map(cfg: dict) -> dict[str, str]:
    """process.env as a dict; the first definition of a key wins, as getenv() sees it."""
    out: dict[str, str] = {}
    for item in cfg.get("process", {}).get("env", []) or []:
        key, sep, value = item.partition("=")
        if sep and key not in out:
            out[key] = value
    return out


def dump(cfg: dict) -> str:
    return fastjson.dumps(cfg)
