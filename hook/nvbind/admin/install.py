"""`nvbind install` / `nvbind uninstall`: put nvbind where each engine looks for it.

Everything is written under DEST (default `/`), recorded in
DEST/usr/local/lib/nvbind/manifest.json, and `uninstall` removes exactly that: files it
created, directories it created (when empty), and files it replaced are restored from
their backups, so an install/uninstall round trip leaves DEST byte for byte as it was.

The program itself: a frozen one-file nvbind carries its one-dir tree, which is unpacked
once to /usr/local/lib/nvbind/nvbind-VERSION/ (no unpacking per container start after
that); a one-dir build copies its own tree; a source install links its own script.
/usr/local/bin/nvbind and /usr/local/bin/nvbind-runtime point at it.
"""

import json
import os
import shutil
import sys

from nvbind import __version__
from nvbind.errors import InputError, NvbindError

ENGINES = ("podman", "crio", "docker", "containerd")
LIBDIR = "/usr/local/lib/nvbind"
BIN = "/usr/local/bin/nvbind"
RUNTIME_BIN = "/usr/local/bin/nvbind-runtime"
HOOK_ENV = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "NVBIND_LOG=/var/log/nvbind.log"]
BACKUP = ".nvbind-backup"


def _hook_file(stage: str, timeout: int) -> str:
    return json.dumps({"version": "1.0.0",
                       "hook": {"path": BIN, "args": ["nvbind", "hook", stage], "env": HOOK_ENV,
                                "timeout": timeout},
                       "when": {"always": True}, "stages": [stage]}, indent=2) + "\n"


CONTAINERD_DROPIN = """# nvbind runtime for containerd (config version 2). containerd 2.x reads conf.d by
# default; for 1.x add `imports = ["/etc/containerd/conf.d/*.toml"]` to config.toml.
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvbind]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvbind.options]
    BinaryName = "%s"
""" % RUNTIME_BIN


class Installer:
    def __init__(self, dest: str):
        self.dest = os.path.abspath(dest)
        self.manifest_path = self.p(f"{LIBDIR}/manifest.json")
        self.m = {"version": __version__, "files": [], "dirs": [], "backups": [], "engines": []}
        if os.path.exists(self.manifest_path):
            with open(self.manifest_path) as f:
                self.m = json.load(f)
        self.changes: list[str] = []

    def p(self, path: str) -> str:
        return self.dest.rstrip("/") + path if self.dest != "/" else path

    # -- recorded primitives
    def mkdirs(self, path: str) -> None:
        missing = []
        d = path
        while d not in ("/", "") and not os.path.isdir(self.p(d)):
            missing.append(d)
            d = os.path.dirname(d)
        for d in reversed(missing):
            os.mkdir(self.p(d), 0o755)
            self.m["dirs"].append(d)

    def write(self, path: str, data: str, mode: int = 0o644) -> None:
        full = self.p(path)
        self.mkdirs(os.path.dirname(path))
        if os.path.lexists(full):
            if path in self.m["files"]:
                with open(full) as f:
                    if f.read() == data:
                        return
            elif path not in [b[0] for b in self.m["backups"]]:
                shutil.move(full, full + BACKUP)
                self.m["backups"].append([path, path + BACKUP])
                self.changes.append(f"backed up {full} to {full + BACKUP}")
        tmp = full + ".nvbind-tmp"
        with open(tmp, "w") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, full)
        if path not in self.m["files"]:
            self.m["files"].append(path)
        self.changes.append(f"wrote {full}")

    def link(self, path: str, target: str) -> None:
        full = self.p(path)
        self.mkdirs(os.path.dirname(path))
        if os.path.islink(full) and os.readlink(full) == target:
            return
        if os.path.lexists(full) and path not in self.m["files"]:
            shutil.move(full, full + BACKUP)
            self.m["backups"].append([path, path + BACKUP])
            self.changes.append(f"backed up {full} to {full + BACKUP}")
        elif os.path.lexists(full):
            os.unlink(full)
        os.symlink(target, full)
        if path not in self.m["files"]:
            self.m["files"].append(path)
        self.changes.append(f"linked {full} -> {target}")

    def save(self) -> None:
        self.mkdirs(LIBDIR)
        if "/usr/local/lib/nvbind/manifest.json" not in self.m["files"]:
            self.m["files"].append("/usr/local/lib/nvbind/manifest.json")
        with open(self.manifest_path + ".tmp", "w") as f:
            json.dump(self.m, f, indent=1)
        os.replace(self.manifest_path + ".tmp", self.manifest_path)

    # -- the program
    def program(self) -> str:
        """Install the executable tree; return the host path engines should run."""
        if getattr(sys, "frozen", False):
            base = getattr(sys, "_MEIPASS", "")
            payload_dir = os.path.join(base, "nvbind_payload")
            tree = f"{LIBDIR}/nvbind-{__version__}"
            if os.path.isdir(payload_dir):          # one-file build: unpack the carried tree
                if not os.path.isdir(self.p(tree)):
                    import tarfile
                    self.mkdirs(LIBDIR)
                    (name,) = os.listdir(payload_dir)
                    with tarfile.open(os.path.join(payload_dir, name)) as tar:
                        tar.extractall(self.p(LIBDIR), filter="data")
                    self.m["files"].append(tree)
                    self.changes.append(f"unpacked {self.p(tree)}")
            elif not os.path.isdir(self.p(tree)):    # one-dir build: copy our own tree
                self.mkdirs(LIBDIR)
                shutil.copytree(os.path.dirname(sys.executable), self.p(tree), symlinks=True)
                self.m["files"].append(tree)
                self.changes.append(f"copied {self.p(tree)}")
            return f"{tree}/nvbind"
        exe = os.path.abspath(sys.argv[0])
        if not os.access(exe, os.X_OK) or exe.endswith(".py"):
            raise NvbindError("install from source needs the `nvbind` script (pip install .)")
        return exe

    def engine(self, name: str) -> None:
        if name in ("podman", "crio"):
            # podman and buildah run precreate; CRI-O only the OCI stages
            stage, timeout, fname = (("precreate", 10, "50-nvbind-precreate.json") if name == "podman"
                                     else ("createRuntime", 30, "50-nvbind-oci.json"))
            self.write(f"/usr/share/containers/oci/hooks.d/{fname}", _hook_file(stage, timeout))
            if name == "crio":
                # releases exclusive leases taken at createRuntime (precreate adds its own
                # poststop entry to the config instead)
                self.write("/usr/share/containers/oci/hooks.d/50-nvbind-poststop.json",
                           _hook_file("poststop", 10))
        elif name == "docker":
            path = "/etc/docker/daemon.json"
            cfg = {}
            if os.path.exists(self.p(path)):
                try:
                    with open(self.p(path)) as f:
                        cfg = json.load(f)
                except ValueError as e:
                    raise NvbindError(f"{self.p(path)} is not valid JSON ({e}); not touching it") from None
            cfg.setdefault("runtimes", {})["nvbind"] = {"path": RUNTIME_BIN}
            self.write(path, json.dumps(cfg, indent=2) + "\n")
        elif name == "containerd":
            self.write("/etc/containerd/conf.d/99-nvbind.toml", CONTAINERD_DROPIN)
        if name not in self.m["engines"]:
            self.m["engines"].append(name)

    def install(self, engines: list[str]) -> list[str]:
        exe = self.program()
        self.link(BIN, exe)
        if {"docker", "containerd"} & set(engines):
            # the exec front end beside a frozen tree (packaging/frontend): pass-through
            # verbs and containers that ask for nothing never start Python
            front = os.path.join(os.path.dirname(exe), "nvbind-runtime")
            self.link(RUNTIME_BIN, front if os.access(self.p(front), os.X_OK) else exe)
        for e in engines:
            self.engine(e)
        self.save()
        return self.changes or ["nothing to change"]

    def uninstall(self) -> list[str]:
        if not os.path.exists(self.manifest_path):
            return [f"nothing installed under {self.dest} (no {self.manifest_path})"]
        out = []
        for path in reversed(self.m["files"]):
            full = self.p(path)
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full)
            elif os.path.lexists(full):
                os.unlink(full)
            else:
                continue
            out.append(f"removed {full}")
        for path, backup in self.m["backups"]:
            if os.path.lexists(self.p(backup)):
                os.replace(self.p(backup), self.p(path))
                out.append(f"restored {self.p(path)}")
        for d in reversed(self.m["dirs"]):
            try:
                os.rmdir(self.p(d))
                out.append(f"removed {self.p(d)}/")
            except OSError:
                pass
        return out


def main(dest: str, engines: list[str] | None, remove: bool) -> int:
    inst = Installer(dest)
    if remove:
        changes = inst.uninstall()
    else:
        if not engines:
            raise InputError(f"install needs --engine ({'|'.join(ENGINES)})")
        bad = [e for e in engines if e not in ENGINES]
        if bad:
            raise InputError(f"unknown engine '{bad[0]}'; known: {', '.join(ENGINES)}")
        changes = inst.install(engines)
    for c in changes:
        print(c)
    return 0
