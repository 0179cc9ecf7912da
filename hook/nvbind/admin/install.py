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
HOOK_BIN = "/usr/local/bin/nvidia-container-runtime-hook"
HOOK_ENV = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "NVBIND_LOG=/var/log/nvbind.log"]
BACKUP = ".nvbind-backup"
# podman reads the hooks directories named in containers.conf `hooks_dir` (default: only
# /usr/share/containers/oci/hooks.d) and knows the precreate stage. buildah (`buildah run`,
# `buildah bud`, `podman build`) ignores hooks_dir: without --hooks-dir it reads
# /usr/share/containers/oci/hooks.d and /etc/containers/oci/hooks.d and fails on any file
# with a stage it does not know (`unknown stage "precreate"`). So precreate lives in a
# directory of nvbind's own that only podman is told about, and buildah gets createRuntime
# (+ poststop) in /etc/containers/oci/hooks.d, which podman does not read by default.
PODMAN_HOOKS = f"{LIBDIR}/hooks.d"
PODMAN_CONF = "/etc/containers/containers.conf.d/50-nvbind.conf"
BUILDAH_HOOKS = "/etc/containers/oci/hooks.d"
SHARED_HOOKS = "/usr/share/containers/oci/hooks.d"
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
# dockerd 20.10 enables `docker run --gpus` when an executable of this name is on its PATH,
# and adds it as a prestart hook: path = that file, args = [NAME, "prestart"], env = dockerd's
# own environment (moby daemon/nvidia_linux.go, setNvidiaGPUs).
HOOK_SCRIPT = """#!/bin/sh
# nvbind: dockerd runs this as the prestart hook of `docker run --gpus` (it looks for an
# executable named nvidia-container-runtime-hook on its PATH); nvbind does the work.
exec %s hook "$@"
""" % BIN


def _hook_file(stage: str, timeout: int, env: list[str] | None = None) -> str:
    return json.dumps({"version": "1.0.0",
                       "hook": {"path": BIN, "args": ["nvbind", "hook", stage],
                                "env": env or HOOK_ENV, "timeout": timeout},
                       "when": {"always": True}, "stages": [stage]}, indent=2) + "\n"


def _log_value(log: str | None) -> str:
    if not log:
        return "/var/log/nvbind.log"
    return log if log == "off" else os.path.abspath(log)



def _extract(tar, dest: str) -> None:
    """Unpack the tree carried in the one-file build (nvbind.spec's tarball) into DEST with
    tarfile's "data" filter (PEP 706): nothing outside DEST, no device or fifo, no link
    leading out, no set-id bit. Pythons before 3.11.4 (Debian 12's 3.11.2) lack the filter:
    the same rules are checked here, and any member breaking one refuses the whole."""
    import tarfile
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    members = tar.getmembers()
    for m in members:
        parts = m.name.split("/")
        bad = m.name.startswith("/") or ".." in parts or not (m.isfile() or m.isdir() or m.issym()
                                                             or m.islnk())
        if m.issym() or m.islnk():
            target = m.linkname if m.islnk() else os.path.join(os.path.dirname(m.name), m.linkname)
            bad = bad or m.linkname.startswith("/") or \
                os.path.normpath(target).split("/")[0] == ".."
        if bad:
            raise NvbindError(f"the carried tree holds {m.name!r}, which may not be unpacked")
        m.mode &= 0o755
    tar.extractall(dest, members=members)

class Installer:
    def __init__(self, dest: str, root: str | None = None, log: str | None = None):
        self.dest = os.path.abspath(dest)
        # hook entries name their whole environment: NVBIND_ROOT / NVBIND_LOG when given
        self.hook_env = [HOOK_ENV[0], f"NVBIND_LOG={_log_value(log)}"]
        if root:
            self.hook_env.append(f"NVBIND_ROOT={os.path.abspath(root)}")
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
                        _extract(tar, self.p(LIBDIR))
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
        if name == "podman":
            # an earlier nvbind put precreate where buildah reads it: take it away
            old = f"{SHARED_HOOKS}/50-nvbind-precreate.json"
            if old in self.m["files"]:
                if os.path.lexists(self.p(old)):
                    os.unlink(self.p(old))
                    self.changes.append(f"removed {self.p(old)} (buildah rejects precreate)")
                self.m["files"].remove(old)
            self.write(f"{PODMAN_HOOKS}/50-nvbind-precreate.json",
                       _hook_file("precreate", 10, self.hook_env))
            self.write(PODMAN_CONF, self._podman_conf())
            self.write(f"{BUILDAH_HOOKS}/50-nvbind-oci.json",
                       _hook_file("createRuntime", 30, self.hook_env))
            self.write(f"{BUILDAH_HOOKS}/50-nvbind-poststop.json",
                       _hook_file("poststop", 10, self.hook_env))
        elif name == "crio":
            # CRI-O runs only the OCI stages; poststop releases leases taken at createRuntime
            self.write(f"{SHARED_HOOKS}/50-nvbind-oci.json",
                       _hook_file("createRuntime", 30, self.hook_env))
            self.write(f"{SHARED_HOOKS}/50-nvbind-poststop.json",
                       _hook_file("poststop", 10, self.hook_env))
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
            self.write(HOOK_BIN, HOOK_SCRIPT, 0o755)
        elif name == "containerd":
            from nvbind.admin import containerd_config
            old = None
            if os.path.exists(self.p(CONTAINERD_CONFIG)):
                with open(self.p(CONTAINERD_CONFIG)) as f:
                    old = f.read()
            new = containerd_config.merge(old, RUNTIME_BIN, self.p(CONTAINERD_CONFIG))
            if new is not None:
                self.write(CONTAINERD_CONFIG, new)
        if name not in self.m["engines"]:
            self.m["engines"].append(name)

    def _podman_conf(self) -> str:
        """A containers.conf drop-in: the hooks directories podman reads now, plus nvbind's."""
        import tomllib
        dirs = [SHARED_HOOKS]
        for conf in ("/usr/share/containers/containers.conf", "/etc/containers/containers.conf"):
            try:
                with open(self.p(conf), "rb") as f:
                    d = tomllib.load(f).get("engine", {}).get("hooks_dir")
            except (OSError, tomllib.TOMLDecodeError):
                continue
            if isinstance(d, list) and all(isinstance(x, str) for x in d):
                dirs = d
        dirs = [x for x in dirs if x != PODMAN_HOOKS] + [PODMAN_HOOKS]
        return ("# nvbind: podman reads nvbind's precreate hook from its own directory, which\n"
                "# buildah (and podman build) never read: buildah rejects the precreate stage.\n"
                "[engine]\nhooks_dir = [\n" + "".join(f'  "{x}",\n' for x in dirs) + "]\n")

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


def main(dest: str, engines: list[str] | None, remove: bool, root: str | None = None,
         log: str | None = None) -> int:
    inst = Installer(dest, root, log)
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
