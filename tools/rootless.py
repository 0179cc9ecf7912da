"""Rootless podman for the tests: a user with subordinate ids, its runtime directory, and
podman run as that user inside a private mount namespace where a simulated host's
/dev/nvidia* nodes sit at the real /dev paths (tools/devoverlay.py).

Rootless podman keeps a "pause" process that holds its user and mount namespaces; every
later podman call of the same user joins them. So every call goes through the same overlay
(same simulated host), and `close()` stops that process (by the pid podman wrote) before
anything is removed.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
USER = "nvbind-rl"
PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"


def _has_range(path: str, user: str) -> bool:
    try:
        with open(path) as f:
            return any(line.split(":")[0] == user for line in f)
    except FileNotFoundError:
        return False


class User:
    """The test user (made if missing, with subuid/subgid ranges), its /run/user/UID."""

    def __init__(self, name: str = USER):
        self.name = name
        self.created = self.made_runtime_dir = False
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name],
                           check=True, timeout=60)
            self.created = True
        pw = pwd.getpwnam(name)
        self.uid, self.gid, self.home = pw.pw_uid, pw.pw_gid, pw.pw_dir
        # useradd adds ranges from login.defs (SUB_UID_COUNT); make sure, for older defaults
        if not _has_range("/etc/subuid", name):
            subprocess.run(["usermod", "--add-subuids", "300000-365535", name], check=True, timeout=60)
        if not _has_range("/etc/subgid", name):
            subprocess.run(["usermod", "--add-subgids", "300000-365535", name], check=True, timeout=60)
        # what systemd-logind makes at login; made here where nobody logged in
        self.runtime_dir = f"/run/user/{self.uid}"
        if not os.path.isdir(self.runtime_dir):
            os.makedirs("/run/user", mode=0o755, exist_ok=True)
            os.mkdir(self.runtime_dir, 0o700)
            os.chown(self.runtime_dir, self.uid, self.gid)
            self.made_runtime_dir = True

    def pids(self) -> list[int]:
        out = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    if os.stat(f"/proc/{d}").st_uid == self.uid:
                        out.append(int(d))
                except OSError:
                    pass
        return out

    def remove(self) -> None:
        # only processes of this test user, started by these tests: by pid, never by name
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.made_runtime_dir:
            subprocess.run(["rm", "-rf", "--one-file-system", self.runtime_dir], timeout=60)
        if self.created:
            subprocess.run(["userdel", "--remove", self.name], capture_output=True, timeout=60)


class RootlessPodman:
    """podman as `user`, storage under state/u (owned by the user), runc, cgroupfs."""

    def __init__(self, user: User, state: str, sim_root: str, cgroup2: bool = False):
        self.user, self.state, self.sim = user, os.path.abspath(state), os.path.abspath(sim_root)
        self.cgroup2 = cgroup2
        self.home = f"{self.state}/u"
        os.makedirs(self.home, exist_ok=True)
        os.chown(self.home, user.uid, user.gid)
        os.makedirs(f"{self.state}/devfs", exist_ok=True)

    def base(self, hooks_dir: str | None = None) -> list[str]:
        cmd = [sys.executable, os.path.join(HERE, "devoverlay.py"), *(["--cgroup2"] if self.cgroup2 else []),
               self.sim, f"{self.state}/devfs",
               "--", "runuser", "-u", self.user.name, "--",
               "env", "-i", PATH, f"HOME={self.user.home}", f"XDG_RUNTIME_DIR={self.user.runtime_dir}",
               "podman", "--root", f"{self.home}/storage", "--runroot", f"{self.home}/run",
               "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs",
               "--events-backend", "file", "--runtime", "runc"]
        return cmd + (["--hooks-dir", hooks_dir] if hooks_dir else [])

    def podman(self, args: list[str], hooks_dir=None, timeout=120, **kw):
        # in the user's home: rootless podman enters the working directory it inherits, and
        # root's may be closed to the user (a CI checkout in a 0700 `mktemp -d`)
        return subprocess.run(self.base(hooks_dir) + args, capture_output=True, text=True,
                              timeout=timeout, cwd=kw.pop("cwd", self.user.home), **kw)

    def import_rootfs(self, rootfs: str, image: str) -> None:
        import engines
        r = engines.import_tar(self.base(), rootfs, image, cwd=self.user.home)
        if r.returncode:
            raise RuntimeError(f"rootless podman import failed ({r.returncode}): {r.stderr}")

    def run(self, args: list[str], image: str, env: dict | None = None, hooks_dir=None,
            extra: list[str] = (), detach=False, timeout=120):
        name = f"nvbrl-{uuid.uuid4().hex[:12]}"
        cmd = ["run", "--name", name, "--network", "none"] + (["-d"] if detach else [])
        for k, v in (env or {}).items():
            cmd += ["--env", f"{k}={v}"]
        r = self.podman(cmd + list(extra) + [image] + list(args), hooks_dir, timeout)
        if not detach:
            self.podman(["rm", "-f", "-t", "0", name], hooks_dir)
        return r, name

    def close(self) -> None:
        self.podman(["system", "reset", "--force"], timeout=180)
        pidfile = f"{self.user.runtime_dir}/libpod/tmp/pause.pid"
        try:
            with open(pidfile) as f:
                os.kill(int(f.read().strip()), signal.SIGKILL)
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
        shutil.rmtree(self.state, ignore_errors=True)
