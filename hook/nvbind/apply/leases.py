"""Exclusive GPU leases: one file per leased key in the lease directory, under one flock.

Keys. A whole GPU is its UUID (`GPU-…`); a MIG slice is its parent's UUID with the slice
as suffix (`GPU-…:GI.CI`), so a GPU and its slices share one key space: a whole-GPU lease
conflicts with every slice of that GPU and each slice with the whole GPU; two different
slices of one GPU do not conflict.

Holder. Taken at createRuntime, whose OCI state every runtime fills the same way (runc,
crun; podman, CRI-O, containerd and docker all run one): the container `id`, its
`bundle`, and `pid`, the container's init process, which exists from create until the
container stops (the pid of runc init, kept through its exec of the user process). The
lease records id, bundle, pid and that process's start time (field 22 of /proc/PID/stat,
in clock ticks since boot) and the boot id.

Liveness. A lease is live while its holder's process exists with the same start time (a
reused pid has another), in this boot, and its bundle directory exists. This holds
whatever way the container ends: poststop releases it (matched by id and bundle), and when
poststop never runs (runtime killed, `podman rm -f` during create, SIGKILL of the
container's init, a host crash) the process is gone and the next taker reclaims the
lease. So records are written without fsync: after a crash every record is of another
boot (or torn, and unreadable records count as stale). Nothing depends on a hook's
working directory (podman runs precreate hooks in the caller's), on the engine, or on a
daemon.

Everyone checks, everyone is seen. Exclusive containers take leases; every other GPU user
(shared, virtual) checks them with `check` before it is given a GPU (a listing of the lease
directory, nothing more when it holds no lease), and registers itself with `register` from
the createContainer entry it gets anyway (state: id, bundle, pid), so that an exclusive
container arriving later is refused while a shared user of its GPU runs. A user record
needs no poststop: it goes stale with its process, and stale records are swept under the
lock by the next acquire (and by a register once more than SWEEP_USERS_AT have gathered:
a register reads the exclusive leases only, so that a GPU container's start does not grow
with the number of containers already running).
"""

import posix      # not os: nvbind.early says why

from nvbind import fastjson
from nvbind.early import isdir, join
from nvbind.errors import InputError, NvbindError

SUFFIX = ".lease"
USER_SUFFIX = ".use"
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def key_of(gpu_uuid: str, slice_: tuple[int, int] | None = None) -> str:
    return gpu_uuid if slice_ is None else f"{gpu_uuid}:{slice_[0]}.{slice_[1]}"


def parse_key(key: str) -> tuple[str, str]:
    """(parent GPU, slice or "") of a lease key; InputError for anything else."""
    parent, sep, sl = key.partition(":")
    ok = 0 < len(parent) <= 80 and set(parent) <= _KEY_CHARS
    if sep:
        gi, dot, ci = sl.partition(".")
        ok = ok and dot == "." and gi.isdigit() and ci.isdigit() and len(sl) <= 16 \
            and gi.isascii() and ci.isascii()
    if not ok:
        raise InputError(f"--lease: {key[:100]!r} is not a lease key (GPU-UUID or GPU-UUID:GI.CI)")
    return parent, sl


def conflicts(a: str, b: str) -> bool:
    pa, sa = parse_key(a)
    pb, sb = parse_key(b)
    return pa == pb and (not sa or not sb or sa == sb)


def _name(key: str) -> str:
    return key.replace(":", "@") + SUFFIX


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            return f.read(64).decode().strip()
    except (OSError, UnicodeDecodeError):
        return None


def start_time(pid: int) -> int | None:
    """Field 22 (starttime) of /proc/PID/stat; None when there is no such process."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            data = f.read(4096)
    except (OSError, ValueError):
        return None
    try:
        # comm (field 2) may hold spaces and parentheses: split after the last ')'
        return int(data[data.rindex(b")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def holder(cid: str, bundle: str, pid: int | None, hostname=None) -> dict:
    h = {"id": cid, "bundle": bundle, "boot": _boot_id()}
    if pid:
        h["pid"], h["start"] = pid, start_time(pid)
    if isinstance(hostname, str) and hostname:
        h["hostname"] = hostname[:64]
    return h


def live(h: dict) -> bool:
    """Whether the holder recorded in a lease still runs (see the module's docstring)."""
    bundle = h.get("bundle")
    if not isinstance(bundle, str) or not bundle.startswith("/") or not isdir(bundle):
        return False
    if h.get("boot") and h.get("boot") != _boot_id():
        return False
    pid = h.get("pid")
    if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0:
        return h.get("start") is not None and start_time(pid) == h.get("start")
    return True     # a holder without a pid (an older lease): its bundle decides


def same(a: dict, b: dict) -> bool:
    return a.get("id") == b.get("id") and a.get("bundle") == b.get("bundle")


def _who(h: dict) -> str:
    return f"container {h.get('id') or h.get('hostname') or '?'} (bundle {h.get('bundle')})"


def _trusted(lease_dir: str) -> None:
    """NvbindError unless the lease directory passes the trust rule (sysio/trust.py)."""
    from nvbind.sysio import trust
    why = trust.untrusted_dir(lease_dir)
    if why:
        raise NvbindError(f"lease directory {lease_dir}: {why}")


class _Locked:
    def __init__(self, lease_dir: str):
        self.dir = lease_dir

    def __enter__(self):
        try:
            try:
                posix.mkdir(self.dir, 0o755)
            except FileExistsError:
                pass                    # _trusted checks what it is
            except FileNotFoundError:   # its parent too (the first lease after a boot)
                import os
                os.makedirs(self.dir, mode=0o755, exist_ok=True)
            _trusted(self.dir)
            self.fd = posix.open(join(self.dir, ".lock"),
                                 posix.O_RDWR | posix.O_CREAT | posix.O_CLOEXEC | posix.O_NOFOLLOW
                                 | posix.O_NONBLOCK, 0o600)
        except OSError as e:
            raise NvbindError(f"lease directory {self.dir}: {e.strerror}") from None
        # flock(2) through sysio.syscalls (which a register and an acquire load anyway for
        # the rootfs and the mounts), not the fcntl extension module (~0.4 ms to load)
        from nvbind.sysio import syscalls
        try:
            syscalls.flock(self.fd, syscalls.LOCK_EX)
        except OSError as e:
            posix.close(self.fd)
            raise NvbindError(f"lease directory {self.dir}: {e.strerror}") from None
        return self

    def __exit__(self, *exc):
        posix.close(self.fd)       # releases the lock


def _read(lease_dir: str, name: str) -> dict | None:
    """A lease file's holder; None when it is gone; {} when unreadable (stale)."""
    try:
        fd = posix.open(join(lease_dir, name),
                        posix.O_RDONLY | posix.O_NOFOLLOW | posix.O_NONBLOCK | posix.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        import stat
        if not stat.S_ISREG(posix.fstat(fd).st_mode):
            return {}
        data = fastjson.loads(posix.read(fd, 65536).decode())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    finally:
        posix.close(fd)


def _records(lease_dir: str, suffix: str, names: list[str] | None = None) -> list[tuple[str, dict]]:
    """(file name, record) of every file with `suffix`; [] when the directory is missing or
    empty (the hot path for every GPU user: one listdir). `names`: the listing, when the
    caller has it."""
    if names is None:
        try:
            names = posix.listdir(lease_dir)
        except OSError:
            return []
    out = []
    for n in names:
        if n.endswith(suffix) and not n.startswith("."):
            h = _read(lease_dir, n)
            if h is not None:
                out.append((n, h))
    return out


def _held(lease_dir: str, names: list[str] | None = None) -> list[tuple[str, dict]]:
    """(file name, holder) of every exclusive lease."""
    return _records(lease_dir, SUFFIX, names)


def _conflict(key: str, h: dict) -> bool:
    other = h.get("gpu")
    try:
        return isinstance(other, str) and conflicts(key, other)
    except InputError:
        return False


def _users(lease_dir: str) -> list[tuple[str, dict]]:
    """(file name, record) of every registered shared/virtual GPU user."""
    return _records(lease_dir, USER_SUFFIX)


def _uses(key: str, h: dict) -> list[str]:
    gpus = h.get("gpus")
    if not isinstance(gpus, list):
        return []
    out = []
    for g in gpus:
        try:
            if isinstance(g, str) and conflicts(key, g):
                out.append(g)
        except InputError:
            pass
    return out


def _user_name(me: dict) -> str:
    """One record per container: its id (unique per engine, made file-name safe) and a
    checksum of id and bundle (the part of the id that was cut or replaced)."""
    from nvbind.settings import name_hash
    ident = f"{me.get('id')}\0{me.get('bundle')}".encode("utf-8", "replace")
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_"
                   for c in str(me.get("id"))[:64])
    return f"{safe}-{name_hash(ident)}{USER_SUFFIX}"


SWEEP_USERS_AT = 64


def _sweep(lease_dir: str, names: list[str] | None = None, users: bool = True) -> None:
    """Under the lock: drop temp files left by a writer killed mid-write (.NAME.nvbind-PID;
    a later writer with that pid could never write otherwise) and, with `users`, user
    records whose process is gone. `names`: the directory's listing, when the caller has it."""
    for n in posix.listdir(lease_dir) if names is None else names:
        if n.startswith(".") and ".nvbind-" in n and (SUFFIX in n or USER_SUFFIX in n):
            try:
                posix.unlink(join(lease_dir, n))
            except OSError:
                pass
    if users:
        for n, h in _users(lease_dir):
            if not live(h):
                try:
                    posix.unlink(join(lease_dir, n))
                except OSError:
                    pass


def register(lease_dir: str, keys: list[str], me: dict) -> str | None:
    """A shared or virtual container (its createContainer entry) records that it uses
    `keys`; refused when a live exclusive lease conflicts (one taken since its decision).
    Returns a warning when the record could not be written (the container still runs).

    Every GPU container's start comes here, so it reads the exclusive leases only (usually
    none), not every other user's record: stale user records are swept by `acquire`, the
    only reader of user records, and here once more than SWEEP_USERS_AT have gathered (a
    node whose containers end without poststop and never meets an exclusive one)."""
    from nvbind.sysio import atomic
    for k in keys:
        parse_key(k)
    with _Locked(lease_dir):
        names = posix.listdir(lease_dir)
        _sweep(lease_dir, names, users=sum(n.endswith(USER_SUFFIX) for n in names) > SWEEP_USERS_AT)
        for _, h in _held(lease_dir, names):
            if same(h, me):
                continue
            for key in keys:
                if _conflict(key, h) and live(h):
                    raise NvbindError(f"GPU {key} is held exclusively by {_who(h)}"
                                      + ("" if h.get("gpu") == key else f" through {h.get('gpu')}"))
        try:
            atomic.write(join(lease_dir, _user_name(me)),
                         fastjson.dumps({**me, "gpus": list(keys)}), 0o644,
                         durable=False)
        except (OSError, ValueError) as e:
            # a shared container is not refused for it (a full /run would stop every GPU
            # container); only a later exclusive one will not see it: say so
            return (f"cannot record the GPU user in {lease_dir}: "
                    f"{getattr(e, 'strerror', None) or e}; an exclusive container could be "
                    "given this GPU while this container runs")
    return None


def check(lease_dir: str, keys: list[str], me: dict | None = None,
          exclusive: bool = False) -> None:
    """Refuse (NvbindError) when a live holder other than `me` leases any of `keys` or a
    key that conflicts with one (GPU vs its slices); with `exclusive`, also when a live
    registered user uses one."""
    if exclusive:
        for _, h in _users(lease_dir):
            if (me is None or not same(h, me)) and any(_uses(k, h) for k in keys) and live(h):
                raise NvbindError(f"GPU {', '.join(k for k in keys if _uses(k, h))} is in use "
                                  f"by {_who(h)} (not exclusive); an exclusive container waits "
                                  "until it stops")
    for _, h in _held(lease_dir):
        if me is not None and same(h, me):
            continue
        for key in keys:
            if _conflict(key, h) and live(h):
                raise NvbindError(f"GPU {key} is held exclusively by {_who(h)}"
                                  + ("" if h.get("gpu") == key else f" through {h.get('gpu')}"))


def acquire(lease_dir: str, keys: list[str], me: dict) -> list[str]:
    """Take every lease or none. Returns notes (reclaimed stale leases)."""
    from nvbind.sysio import atomic
    for k in keys:
        parse_key(k)
    notes = []
    with _Locked(lease_dir):
        for name, h in _held(lease_dir):
            if same(h, me) or not any(_conflict(k, h) for k in keys):
                continue
            if live(h):
                raise NvbindError(f"GPU {', '.join(k for k in keys if _conflict(k, h))} is held "
                                  f"exclusively by {_who(h)}" + (
                                      "" if h.get("gpu") in keys else f" through {h.get('gpu')}"))
            try:
                posix.unlink(join(lease_dir, name))
            except FileNotFoundError:
                pass
            notes.append(f"reclaimed stale lease on {h.get('gpu') or name} from {_who(h)}")
        _sweep(lease_dir)
        for _, h in _users(lease_dir):
            if same(h, me):
                continue
            used = [k for k in keys if _uses(k, h)]
            if used:        # _sweep left only live users
                raise NvbindError(f"GPU {', '.join(used)} is in use by {_who(h)} (not "
                                  "exclusive); an exclusive container waits until it stops")
        written = []
        try:
            for key in keys:
                data = fastjson.dumps({**me, "gpu": key})
                atomic.write(join(lease_dir, _name(key)), data, 0o644, durable=False)
                written.append(key)
        except (OSError, ValueError) as e:
            for key in written:
                try:
                    posix.unlink(join(lease_dir, _name(key)))
                except OSError:
                    pass
            # fail closed: without a written lease, exclusivity cannot be promised
            raise NvbindError(f"cannot write the lease for GPU {key} in {lease_dir}: "
                              f"{getattr(e, 'strerror', None) or e}; refusing the exclusive "
                              "container") from None
    return notes


def release(lease_dir: str, cid: str, bundle: str) -> list[str]:
    """Drop every lease held by the container (id and bundle). Safe to call twice or for
    strangers.

    Without the lock: the lock makes a taker's check and its write one step (acquire,
    register), and removing a record can never make a check wrong; a taker that still saw
    the record refuses as if the container had not stopped yet (it was stopping)."""
    if not isdir(lease_dir):
        return []
    _trusted(lease_dir)
    try:
        names = posix.listdir(lease_dir)
    except OSError as e:
        raise NvbindError(f"lease directory {lease_dir}: {e.strerror}") from None
    out = []
    me = {"id": cid, "bundle": bundle}
    for name, h in _held(lease_dir, names) + _records(lease_dir, USER_SUFFIX, names):
        if same(h, me):
            try:
                posix.unlink(join(lease_dir, name))
            except FileNotFoundError:
                pass
            if name.endswith(SUFFIX):
                out.append(f"released {h.get('gpu', name)}")
    return out
