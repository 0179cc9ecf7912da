"""Settings: the global options and the configuration, loaded once, lazily.

`Settings` holds what every verb shares (--root, --log, --config, NVBIND_* overrides) and
reads /etc/nvbind/config.toml (or --config / NVBIND_CONFIG) only when something asks for it:
a container that asks for no GPU never pays for (or is harmed by) the configuration.

The file is TOML, validated against schemas/config.schema.json with jsonschema. A hook
must not pay for that on every container start, so a validated file is cached as JSON
under the cache directory, keyed by the file's path, inode, size and mtime; a cache entry
that does not match (or is not ours) is ignored and rebuilt. An invalid file is an error
naming the file, the key path and the problem: the hook refuses to guess.
"""

import posix      # not os: a hook's settings are read before it knows it has work (nvbind.early)

from nvbind.early import abspath, fsencode, getenv, join
from nvbind.errors import InputError

DEFAULT_PATH = "/etc/nvbind/config.toml"
DEFAULT_CACHE_DIR = "/run/nvbind"
ALL_CAPS = ["compute", "compat32", "display", "graphics", "ngx", "utility", "video"]
DEFAULTS = {
    "root": "/",
    "log_file": "/var/log/nvbind.log",
    "log_level": "info",
    "default_profile": "default",
    "cache_dir": DEFAULT_CACHE_DIR,
    "lease_dir": "/run/nvbind/leases",
    "ldconfig": "",
    "mps_pipe_dir": "/tmp/nvidia-mps",
    "mps_log_dir": "/var/log/nvidia-mps",
    "capabilities": ALL_CAPS,
    "sources": {"env": True, "env_unprivileged": True, "annotations": True,
                "annotations_unprivileged": None, "mounts": False},
    # profiles a container may select itself (annotation nvbind.io/profile, env
    # NVBIND_PROFILE); the default profile always applies. Built-in profiles add no mounts
    # or devices, and every profile stays under `capabilities`.
    "allowed_profiles": ["default", "ai-ml", "gaming"],
    "profiles": {},
}


def host_root() -> bool:
    """Root of the host: euid 0 in the initial user namespace. Rootless podman runs its hooks
    as uid 0 of a user namespace that maps it to an ordinary user: not host root."""
    if posix.geteuid() != 0:
        return False
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() == ["0", "0", "4294967295"]
    except OSError:
        return True         # no user namespaces in this kernel


def host_uid() -> int:
    """This process's euid as the parent user namespace sees it (the login user of rootless
    podman's namespace), from /proc/self/uid_map; the euid itself when not mapped."""
    euid = posix.geteuid()
    try:
        with open("/proc/self/uid_map") as f:
            for line in f:
                inside, outside, count = (int(x) for x in line.split())
                if inside <= euid < inside + count:
                    return outside + euid - inside
    except (OSError, ValueError):
        pass
    return euid


def user_runtime_dir() -> tuple[str | None, str]:
    """Where a non-root nvbind keeps its caches and leases: ($XDG_RUNTIME_DIR/nvbind, "") or
    (None, why not). The directory must be owned by this euid and writable by no one else;
    the hook's own environment is read (a hook entry's `env`, never the container's), then
    /run/user/<uid> of the user the namespace maps this euid to (podman passes a hook only
    the `env` of its entry)."""
    owner = posix.geteuid()
    tried = []
    for d in (getenv("XDG_RUNTIME_DIR"), f"/run/user/{host_uid()}"):
        if not d or d in tried:
            continue
        tried.append(d)
        try:
            st = posix.stat(d)
        except OSError:
            continue
        if d.startswith("/") and st.st_uid == owner and not st.st_mode & 0o022:
            return join(d, "nvbind"), ""
    return None, (f"running as uid {host_uid()} (not root) with no per-user runtime directory "
                  f"({' or '.join(tried) or 'XDG_RUNTIME_DIR unset'}: missing, not owned by "
                  "this user, or writable by others)")


def _defaults() -> dict:
    """DEFAULTS for who runs nvbind: root uses /run/nvbind; anyone else (rootless podman's
    hooks, a user's `nvbind info`) its own runtime directory, or no cache and no leases."""
    if host_root():
        return DEFAULTS
    d, _why = user_runtime_dir()
    return {**DEFAULTS, "cache_dir": d or "off", "lease_dir": join(d, "leases") if d else ""}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) \
            and k != "profiles" else v
    return out


def schema_path() -> str:
    import os
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "config.schema.json")


def parse(path: str, data: bytes) -> dict:
    """TOML text -> validated settings (without defaults). InputError names file and key."""
    import tomllib
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 ({e.reason})") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: not valid TOML: {e}") from None
    errors = schema_errors(doc)
    if errors:
        raise InputError(f"{path}: " + "; ".join(errors))
    return doc


_validator = None


def schema_errors(doc: dict) -> list[str]:
    global _validator
    if _validator is None:
        import json

        import jsonschema  # only when a config file is new or changed, never per container
        with open(schema_path()) as f:
            _validator = jsonschema.Draft202012Validator(json.load(f))
    out = []
    for e in sorted(_validator.iter_errors(doc),
                    key=lambda e: list(map(str, e.absolute_path))):
        where = ".".join(str(p) for p in e.absolute_path) or "(top level)"
        out.append(f"{where}: {e.message}")
    return out


def name_hash(data: bytes) -> str:
    """16 hex digits naming `data` in a file name (the config cache, a lease user record):
    64-bit FNV-1a. Not zlib's crc32: zlib is an extension module (with libz), ~0.4 ms of a
    hook's start to load; not for security (the names only keep records apart)."""
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def _cache_file(cache_dir: str, path: str) -> str:
    return join(cache_dir, f"config-{name_hash(fsencode(path))}.json")


def load(path: str | None = None) -> dict:
    """The effective configuration (defaults + file)."""
    explicit = path or getenv("NVBIND_CONFIG")
    path = abspath(explicit or DEFAULT_PATH)
    try:
        st = posix.stat(path)
    except FileNotFoundError:
        if explicit:
            raise InputError(f"config file {path} does not exist") from None
        return dict(_defaults())
    except OSError as e:
        raise InputError(f"cannot read config file {path}: {e.strerror}") from None
    from nvbind import fastjson
    key = [path, st.st_ino, st.st_size, st.st_mtime_ns]
    defaults = _defaults()
    cache_dir = getenv("NVBIND_CACHE_DIR") or defaults["cache_dir"]
    if cache_dir in ("off", "") or not cache_dir.startswith("/"):
        with open(path, "rb") as f:        # no cache: validate every time
            return _merge(defaults, parse(path, f.read(1 << 20)))
    cfile = _cache_file(cache_dir, path)
    # the cache decides what gets mounted: trusted only under nvbind.sysio.trust's rule
    from nvbind.sysio import trust
    data = trust.open_trusted(cfile, 1 << 20)
    try:
        cached = fastjson.loads(data.decode(), own=True) if data is not None else None
        if isinstance(cached, dict) and cached.get("key") == key and isinstance(cached.get("config"), dict):
            return _merge(defaults, cached["config"])
    except (ValueError, UnicodeDecodeError):
        pass
    with open(path, "rb") as f:
        doc = parse(path, f.read(1 << 20))
    try:
        import os

        from nvbind.sysio import atomic
        os.makedirs(cache_dir, mode=0o755, exist_ok=True)
        if trust.untrusted_dir(cache_dir) is None:
            atomic.write(cfile, fastjson.dumps({"key": key, "config": doc}), 0o644)
    except (OSError, ValueError):
        pass    # no cache: the next run validates again, nothing else changes
    return _merge(defaults, doc)


def next_value(it, opt: str) -> str:
    """The value after an option on a hand-parsed command line (the hook path has no argparse)."""
    try:
        return next(it)
    except StopIteration:
        raise InputError(f"{opt} needs a value") from None


class Settings:
    """Global options. Each setting: command line, then environment, then config file.

    `result` collects what a door wants in its log line; `config` is loaded on first use."""

    def __init__(self, argv: list[str] = (), config: dict | None = None):
        self.root_opt = getenv("NVBIND_ROOT") or None
        self.log_opt = getenv("NVBIND_LOG")
        self.config_path = None
        self.result: dict = {}
        self.then = None        # a door's last step, after its log line (createContainer)
        self._config = None if config is None else _merge(_defaults(), config)
        self.rest: list[str] = []
        it = iter(argv)
        for a in it:
            if a == "--root":
                self.root_opt = next_value(it, a)
            elif a.startswith("--root="):
                self.root_opt = a.split("=", 1)[1]
            elif a == "--log":
                self.log_opt = next_value(it, a)
            elif a == "--config":
                self.config_path = next_value(it, a)
            elif a in ("-h", "--help"):
                self.rest = ["help"]
                return
            else:
                self.rest = [a, *it]
                break
        if self.root_opt == "":
            raise InputError("--root needs a directory")

    @property
    def config(self) -> dict:
        if self._config is None:
            self._config = load(self.config_path)
        return self._config

    @property
    def loaded(self) -> bool:
        return self._config is not None

    @property
    def config_file(self) -> str | None:
        return self.config_path or getenv("NVBIND_CONFIG")

    @property
    def cache_dir(self) -> str | None:
        """Inventory cache directory: NVBIND_CACHE_DIR, else the config's; "off" for none."""
        d = getenv("NVBIND_CACHE_DIR") or self.config["cache_dir"]
        return None if d in ("off", "") else d

    @property
    def root(self) -> str:
        return self.root_opt or self.config["root"]

    @property
    def log(self) -> str | None:
        log = self.log_opt if self.log_opt is not None else self.config["log_file"]
        return None if log in ("", "off", "-") else log

    def log_level(self) -> str:
        """For the log filter: never lets a broken configuration stop a log line."""
        try:
            level = self.config.get("log_level")
        except Exception:  # noqa: BLE001 - the error itself is being logged
            level = None
        return level or getenv("NVBIND_LOG_LEVEL") or "info"
