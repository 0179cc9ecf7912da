"""Device cgroup rules for a running container: v1 devices.allow, v2 BPF program."""

import errno
import os

from nvbind.errors import NvbindError


UNIFIED = "/sys/fs/cgroup"


def _mounts():
    """(mount point, fstype, super options) from /proc/self/mountinfo."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(fields) >= 5 and len(rfields) >= 3:
                root, point = fields[3], fields[4].replace("\\040", " ")
                yield root, point, rfields[0], rfields[2].split(",")


def locate(pid: int) -> tuple[str, str]:
    """('v1', devices cgroup dir) or ('v2', unified cgroup dir) of process `pid`."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise NvbindError(f"cannot read /proc/{pid}/cgroup: {e.strerror}") from None
    v1 = v2 = None
    for line in lines:
        hid, ctrls, path = (line.split(":", 2) + ["", ""])[:3]
        if "devices" in ctrls.split(","):
            v1 = path
        elif hid == "0" and ctrls == "":
            v2 = path
    # Unified mode (what runc and crun check too): /sys/fs/cgroup itself is cgroup2. Then
    # device control is a BPF program, whatever v1 hierarchies are still listed.
    if v2 is not None and os.path.exists(f"{UNIFIED}/cgroup.controllers"):
        return "v2", os.path.normpath(f"{UNIFIED}/{v2.lstrip('/')}")
    if v1 is not None:
        for root, point, fstype, opts in _mounts():
            if fstype == "cgroup" and "devices" in opts:
                return "v1", _join(point, root, v1)
    raise NvbindError(f"no device cgroup found for pid {pid}")


def _join(point, root, path):
    if root != "/" and path.startswith(root):
        path = path[len(root):]
    return os.path.normpath(point + "/" + path.lstrip("/"))


def allow(pid: int, rules) -> str:
    """Allow each rule (major, minor, access) for the cgroup of `pid`; say what was done."""
    if not rules:
        return "no device rules"
    version, path = locate(pid)
    if (version, path) == locate(os.getpid()):
        # the runtime made no cgroup for the container (rootless, cgroups disabled): rules
        # written here would reach every process that shares it, nvbind's caller included
        raise NvbindError(f"container pid {pid} has no device cgroup of its own (it shares "
                          f"{path} with the hook); refusing to allow devices there: use the precreate "
                          "hook, the runtime shim or CDI")
    if version == "v1":
        target = os.path.join(path, "devices.allow")
        try:
            for r in rules:
                with open(target, "w") as f:
                    f.write(f"{r.type} {r.major}:{r.minor} {r.access}")
        except OSError as e:
            raise NvbindError(f"writing {target} failed: {e.strerror}"
                              + ("; the hook needs root on the host to change device cgroups"
                                 if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else "")) from None
        return f"cgroup v1: {len(rules)} rule(s) in {target}"
    from nvbind.apply import bpf
    return "cgroup v2: " + bpf.allow(path, [(r.major, r.minor) for r in rules])
