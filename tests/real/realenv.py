"""Helpers for the real-package tests (see conftest.py here)."""
from __future__ import annotations

import json
import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGES = {"plain": "localhost/nvbind-bookworm:latest", "glvnd": "localhost/nvbind-bookworm-glvnd:latest"}
HOOK_PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"


class Host:
    """One host layout wired to podman through its own hooks.d and inventory cache."""

    def __init__(self, name: str, root: str, state: str, real: dict):
        import engines
        self.name, self.root, self.real = name, root, real
        self.version = real["version"]
        self.state = state
        self.cache_dir = f"{state}/cache-{name}"
        self.log = f"{state}/nvbind-{name}.log"
        hooks = f"{state}/hooks-{name}"
        os.makedirs(hooks, exist_ok=True)
        with open(f"{hooks}/50-nvbind-precreate.json", "w") as f:
            json.dump({"version": "1.0.0",
                       "hook": {"path": engines.nvbind_exe(),
                                "args": ["nvbind", "--root", root, "hook", "precreate"],
                                "env": [HOOK_PATH, f"NVBIND_LOG={self.log}",
                                        f"NVBIND_CACHE_DIR={self.cache_dir}"],
                                "timeout": 20},
                       "when": {"always": True}, "stages": ["precreate"]}, f)
        self.pm = engines.Podman(state, hooks)

    def run(self, script: str, caps: str | None = "utility", devices: str | None = "0",
            image: str = "plain", extra=(), env=None, timeout=120):
        e = dict(env or {})
        if devices is not None:
            e["NVIDIA_VISIBLE_DEVICES"] = devices
        if caps is not None:
            e["NVIDIA_DRIVER_CAPABILITIES"] = caps
        vols = ["--volume", f"{self.real['dlcheck']}:/usr/local/bin/dlcheck:ro",
                "--volume", f"{self.real['debs']}:/debs:ro"]
        return self.pm.run(["/bin/sh", "-c", script], env=e, image=IMAGES[image],
                           extra=vols + list(extra), timeout=timeout)

    def mounted(self, caps: str, image: str = "plain", devices: str = "0") -> list[str]:
        """Container paths nvbind bind-mounted (read from the container's mount table)."""
        r = self.run("cat /proc/self/mountinfo", caps=caps, image=image, devices=devices)
        assert r.returncode == 0, r.stdout + r.stderr
        out = []
        for line in r.stdout.splitlines():
            f = line.split()
            target = f[4].replace("\\040", " ")
            if target.startswith(("/proc", "/sys", "/dev/", "/etc/hosts", "/etc/hostname",
                                  "/etc/resolv.conf", "/run/.containerenv", "/usr/local/bin/dlcheck",
                                  "/debs")) or target in ("/", "/dev", "/run/secrets"):
                continue
            out.append(target)
        return sorted(set(out))


def nvbind(args, env=None, timeout=60):
    import engines
    e = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "NVBIND_LOG": "off"}
    e.update(env or {})
    return subprocess.run([engines.nvbind_exe(), *args], capture_output=True, text=True,
                          env=e, timeout=timeout, cwd=REPO)
