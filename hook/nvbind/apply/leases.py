"""Exclusive GPU leases: one file per GPU in the lease directory, under one flock.

A lease names its holder by bundle directory (precreate runs in the bundle; the runtime
shim, createRuntime and poststop all know it). It is taken at create and released at
poststop; a lease whose holder's bundle no longer exists is stale and reclaimed.
"""

import fcntl
import os

from nvbind import fastjson
from nvbind.errors import NvbindError


def _name(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key) + ".lease"


class _Locked:
    def __init__(self, lease_dir: str):
        self.dir = lease_dir

    def __enter__(self):
        try:
            os.makedirs(self.dir, mode=0o755, exist_ok=True)
            self.fd = os.open(os.path.join(self.dir, ".lock"),
                              os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            raise NvbindError(f"lease directory {self.dir}: {e.strerror}") from None
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _read(path: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            data = fastjson.loads(f.read(65536).decode())
        return data if isinstance(data, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, UnicodeDecodeError):
        return {}   # unreadable: treated as stale


def acquire(lease_dir: str, keys: list[str], holder: dict) -> list[str]:
    """Take every lease or none. Returns notes (reclaimed stale leases)."""
    notes = []
    with _Locked(lease_dir):
        for key in keys:
            cur = _read(os.path.join(lease_dir, _name(key)))
            if cur is None or cur.get("bundle") == holder.get("bundle"):
                continue
            if cur.get("bundle") and os.path.isdir(cur["bundle"]):
                who = cur.get("id") or cur.get("hostname") or cur["bundle"]
                raise NvbindError(f"GPU {key} is held exclusively by container {who} "
                                  f"(bundle {cur['bundle']})")
            notes.append(f"reclaimed stale lease on {key} from {cur.get('bundle') or 'unknown'}")
        for key in keys:
            path = os.path.join(lease_dir, _name(key))
            tmp = f"{path}.{os.getpid()}"
            try:
                with open(tmp, "w") as f:
                    f.write(fastjson.dumps({**holder, "gpu": key}))
                os.replace(tmp, path)
            except OSError as e:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                # fail closed: without a written lease, exclusivity cannot be promised
                raise NvbindError(f"cannot write the lease for GPU {key} in {lease_dir}: "
                                  f"{e.strerror}; refusing the exclusive container") from None
    return notes


def release(lease_dir: str, bundle: str) -> list[str]:
    """Drop every lease held by `bundle`. Safe to call twice or for strangers."""
    if not os.path.isdir(lease_dir):
        return []
    out = []
    with _Locked(lease_dir):
        for name in sorted(os.listdir(lease_dir)):
            if not name.endswith(".lease"):
                continue
            path = os.path.join(lease_dir, name)
            cur = _read(path)
            if cur is not None and cur.get("bundle") == bundle:
                os.unlink(path)
                out.append(f"released {cur.get('gpu', name)}")
    return out
