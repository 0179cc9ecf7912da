#!/usr/bin/env python3
"""Run a command with a simulated host's /dev/nvidia* nodes at the real /dev paths.

    tools/devoverlay.py [--cgroup2] SIMROOT SCRATCH -- CMD...

Rootless podman cannot mknod: it bind-mounts the host's own /dev/nvidia* into the
container. A simulated host keeps its nodes under SIMROOT/dev, so for rootless tests those
nodes must appear at /dev/nvidia*. This does it without touching the real /dev: run inside
a private mount namespace (it re-runs itself under `unshare -m --propagation private`
and checks that the namespace is a new one), it mounts a tmpfs at SCRATCH, mirrors every entry
of /dev there (symlinks copied; files and directories bind-mounted, submounts included),
bind-mounts SIMROOT's nvidia nodes (and nvidia-caps) over empty files made beside them,
then mounts that tmpfs over /dev and execs CMD. All of it dies with the namespace.
--cgroup2 also mounts cgroup2 on /sys/fs/cgroup there: a unified-mode host (Debian 12's
default) on a machine booted hybrid.
"""
from __future__ import annotations

import os
import stat
import subprocess
import sys


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, timeout=30)


def _placeholder(path: str, src: str) -> None:
    if os.path.isdir(src) and not os.path.islink(src):
        os.mkdir(path)
    else:
        open(path, "w").close()


def main(argv: list[str]) -> int:
    if "--" not in argv or len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    here = os.readlink("/proc/self/ns/mnt")
    if argv[0] != "--inner":
        os.execvp("unshare", ["unshare", "-m", "--propagation", "private", sys.executable,
                              os.path.abspath(__file__), "--inner", here, *argv])
    outer, argv = argv[1], argv[2:]
    if here == outer:
        print("devoverlay: still in the caller's mount namespace; refusing", file=sys.stderr)
        return 2
    cgroup2 = argv[0] == "--cgroup2"
    if cgroup2:
        argv = argv[1:]
    sep = argv.index("--")
    sim, scratch, cmd = os.path.abspath(argv[0]), os.path.abspath(argv[1]), argv[sep + 1:]
    if cgroup2:
        # as tools/engines.py RUNTIMES["runc-v2"]: a cgroup v2 host, in this namespace only
        _mount("-t", "cgroup2", "none", "/sys/fs/cgroup")
    os.makedirs(scratch, exist_ok=True)
    _mount("-t", "tmpfs", "-o", "mode=755", "nvbind-devoverlay", scratch)
    nvidia = {n for n in os.listdir(f"{sim}/dev") if n.startswith("nvidia")}
    for name in sorted(os.listdir("/dev")):
        if name in nvidia:
            continue
        src, dst = f"/dev/{name}", f"{scratch}/{name}"
        st = os.lstat(src)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), dst)
            continue
        _placeholder(dst, src)
        _mount("--rbind", src, dst)
    for name in sorted(nvidia):
        src, dst = f"{sim}/dev/{name}", f"{scratch}/{name}"
        _placeholder(dst, src)
        _mount("--rbind" if os.path.isdir(src) else "--bind", src, dst)
    _mount("--rbind", scratch, "/dev")
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
