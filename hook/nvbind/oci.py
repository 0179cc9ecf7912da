"""Reading what the engine hands us: OCI config.json, OCI state, bundles."""

import posix      # not os: precreate reads its config before it knows it has work (nvbind.early)

from nvbind import fastjson
from nvbind.early import abspath, getenv, join
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
    if fd is not None and not _stat.S_ISREG(posix.fstat(fd).st_mode):
        data = _read_fd(fd, timeout if timeout is not None else
                        float(getenv("NVBIND_STDIN_TIMEOUT") or STDIN_TIMEOUT))
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
    from nvbind.sysio import deadline
    chunks, size = [], 0
    try:
        with deadline.within(timeout):
            while size <= MAX_INPUT:
                try:
                    chunk = posix.read(fd, 1 << 20)
                except BlockingIOError:     # a non-blocking pipe: wait in the read instead
                    posix.set_blocking(fd, True)
                    continue
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    except deadline.Expired:
        raise InputError(f"stdin was not complete after {timeout:g} s") from None
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
    """An OCI runtime config, with every part nvbind reads or edits checked for shape.

    A member that is null is what Go's decoder (the runtimes') takes as absent, and is
    removed; any other wrong type is an InputError naming the field."""
    cfg = _load_object(text, what)
    for path, kind, need in SHAPE:
        _check(cfg, path, kind, need, what)
    if "\0" in cfg["root"]["path"]:
        raise InputError(f"{what}: root.path: holds a NUL character")
    return cfg


# (path, type, required); "[]" in a path: every element of that list
SHAPE = (
    ("process", dict, True), ("process.env", list, False), ("process.env[]", str, False),
    ("process.capabilities", dict, False), ("process.capabilities.bounding", list, False),
    ("process.capabilities.bounding[]", str, False),
    ("root", dict, True), ("root.path", str, True),
    ("annotations", dict, False), ("annotations.*", str, False),
    ("hostname", str, False),
    ("mounts", list, False), ("mounts[]", dict, False), ("mounts[].destination", str, False),
    ("linux", dict, False), ("linux.devices", list, False), ("linux.devices[]", dict, False),
    ("linux.devices[].path", str, False),
    ("linux.resources", dict, False), ("linux.resources.devices", list, False),
    ("linux.resources.devices[]", dict, False),
    ("hooks", dict, False), ("hooks.*", list, False),
)
_TYPE = {dict: "an object", list: "a list", str: "a string"}


def _check(cfg: dict, path: str, kind, need: bool, what: str) -> None:
    parts = path.replace("[]", ".[]").split(".")
    todo = [(cfg, "")]
    for n, part in enumerate(parts):
        last = n == len(parts) - 1
        nxt = []
        for obj, where in todo:
            if part == "[]":
                items = [(v, f"{where}[{i}]", obj, i) for i, v in enumerate(obj)] \
                    if isinstance(obj, list) else []
            elif part == "*":
                items = [(v, f"{where}.{k}", obj, k) for k, v in obj.items()] \
                    if isinstance(obj, dict) else []
            else:
                if not isinstance(obj, dict):
                    continue
                full = f"{where}.{part}" if where else part
                if obj.get(part) is None:
                    obj.pop(part, None)         # null: absent, as Go reads it
                    if need:
                        raise InputError(f"{what}: {full}: missing")
                    continue
                items = [(obj[part], full, obj, part)]
            for v, w, parent, k in items:
                if last:
                    if v is None and part in ("[]", "*"):
                        raise InputError(f"{what}: {w}: must be {_TYPE[kind]}, not null")
                    if not isinstance(v, kind):
                        raise InputError(f"{what}: {w}: must be {_TYPE[kind]}, got "
                                         f"{type(v).__name__}")
                    if kind is str and need and not v:
                        raise InputError(f"{what}: {w}: must not be empty")
                else:
                    nxt.append((v, w))
        todo = nxt


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
    for key in ("id", "bundle"):
        if "\0" in st[key] or len(st[key]) > 4096:
            raise InputError(f"OCI state: {key}: not a usable {'path' if key == 'bundle' else 'id'}")
    if not st["bundle"].startswith("/"):
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
    path = join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            text = read_stdin(f)
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    cfg = parse_config(text, path)
    return cfg, rootfs_path(bundle, cfg)


def rootfs_path(bundle: str, cfg: dict) -> str:
    root = cfg["root"]["path"]
    path = root if root.startswith("/") else join(bundle, root)
    if path.startswith("/"):
        return abspath(path)        # os.path.normpath, for an absolute path
    import os
    return os.path.normpath(path)


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
