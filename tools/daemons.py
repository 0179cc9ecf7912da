"""dockerd and containerd for the tests: each with its own data root, exec/state root and
socket, started bounded in time and stopped afterwards; images made from a local rootfs.

Never the host's daemons: nothing here touches /var/lib/docker, /run/containerd/containerd.sock
or /etc/docker. Debian's binaries are named by path (`/usr/bin/docker`, `/usr/sbin/dockerd`):
another docker CLI may be first on PATH.

dockerd runs in a private mount namespace (`unshare -m`) where, when an install tree DEST is
given, DEST/usr/local/bin is bound over /usr/local/bin: the daemon then sees exactly what
`nvbind install --dest DEST` wrote at the paths it wrote them for, and the host is not
changed. A scratch directory is bound over /etc/docker as well (dockerd 20.10 writes its
trust key there, whatever --config-file says).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time

DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
CONTAINERD = "/usr/bin/containerd"
CTR = "/usr/bin/ctr"
# dockerd finds containerd, containerd-shim-runc-v2 and runc on its PATH (Debian: /usr/bin,
# /usr/sbin); /usr/local/bin first, as under systemd, for nvidia-container-runtime-hook
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def short_dir(prefix: str) -> str:
    """A directory with a short path: unix socket paths are limited to 108 bytes."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


def _wait(pred, timeout: float, what: str, proc: subprocess.Popen, log: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        if pred():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready after {timeout}s:\n{_tail(log)}")


def _tail(path: str, n: int = 4000) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


def _stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def unmount_under(path: str) -> None:
    """Lazily unmount whatever is still mounted under path (ours only), deepest first."""
    path = os.path.realpath(path).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for p in sorted({p for p in points if (p + "/").startswith(path)}, key=len, reverse=True):
        subprocess.run(["umount", "-l", p], timeout=30, check=False, capture_output=True)


def _rmtree(path: str) -> None:
    # mounts in the daemons' namespaces died with them; any made in ours go first
    unmount_under(path)
    subprocess.run(["rm", "-rf", "--one-file-system", path], timeout=120, check=False)


# ---- images -------------------------------------------------------------------------------
def docker_archive(rootfs: str, tag: str, out: str, cmd: list[str] | None = None) -> str:
    """A `docker save` format archive (manifest.json + config + one layer) of rootfs,
    which both `docker load` and `ctr images import` read."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name in sorted(os.listdir(rootfs)):
            t.add(os.path.join(rootfs, name), arcname=name)
    data = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(data).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": cmd or ["sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "nvbind tools/daemons.py"}],
    }, sort_keys=True).encode()
    cfg_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": cfg_name, "RepoTags": [tag],
                            "Layers": ["layer/layer.tar"]}]).encode()
    with tarfile.open(out, "w") as t:
        for name, blob in ((cfg_name, config), ("layer/layer.tar", data),
                           ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(blob), 0o644
            t.addfile(info, io.BytesIO(blob))
    return out


# ---- dockerd ------------------------------------------------------------------------------
class Dockerd:
    def __init__(self, config_file: str, install_dest: str | None = None,
                 env: dict[str, str] | None = None, storage: str = "overlay2"):
        self.dir = short_dir("nvbd-")
        self.sock = f"{self.dir}/docker.sock"
        self.log = f"{self.dir}/dockerd.log"
        self.config_file = config_file
        self.dest = install_dest
        self.env = env or {}
        self.storage = storage
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> "Dockerd":
        os.makedirs(f"{self.dir}/etc-docker")
        binds = [f"mount --bind {self.dir}/etc-docker /etc/docker"]
        if self.dest:
            binds.append(f"mount --bind {self.dest}/usr/local/bin /usr/local/bin")
        os.makedirs("/etc/docker", exist_ok=True)
        cmd = [DOCKERD, "--config-file", self.config_file,
               "--data-root", f"{self.dir}/data", "--exec-root", f"{self.dir}/exec",
               "-H", f"unix://{self.sock}", "--pidfile", f"{self.dir}/docker.pid",
               "--iptables=false", "--ip-masq=false", "--bridge=none",
               "--storage-driver", self.storage, "--exec-opt", "native.cgroupdriver=cgroupfs",
               "--log-level", "info"]
        script = " && ".join(binds + ['exec "$@"'])
        env = {"PATH": PATH, "HOME": "/root", **self.env}
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                                          script, "sh", *cmd], stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        _wait(lambda: self.cli(["version"], timeout=10).returncode == 0, timeout, "dockerd",
              self.proc, self.log)
        return self

    def cli(self, args: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([DOCKER, "-H", f"unix://{self.sock}", *args], capture_output=True,
                              text=True, timeout=timeout, env={"PATH": PATH, "HOME": self.dir,
                                                               "DOCKER_CONFIG": f"{self.dir}/cli"},
                              **kw)

    def load(self, archive: str) -> None:
        r = self.cli(["load", "-i", archive])
        assert r.returncode == 0, r.stderr

    def stop(self) -> None:
        if self.proc:
            r = self.cli(["ps", "-aq"], timeout=30)
            ids = r.stdout.split()
            if ids:
                self.cli(["rm", "-f", *ids], timeout=60)
            _stop(self.proc)
        _rmtree(self.dir)


# ---- containerd ---------------------------------------------------------------------------
def debian_containerd_config() -> str:
    """The config.toml Debian's containerd package installs (its /etc/containerd/config.toml),
    as a test's starting point; the package's own file when present."""
    try:
        with open("/etc/containerd/config.toml") as f:
            return f.read()
    except OSError:
        return ('version = 2\n\n[plugins]\n  [plugins."io.containerd.grpc.v1.cri"]\n'
                '    [plugins."io.containerd.grpc.v1.cri".cni]\n      bin_dir = "/usr/lib/cni"\n'
                '      conf_dir = "/etc/cni/net.d"\n  [plugins."io.containerd.internal.v1.opt"]\n'
                '    path = "/var/lib/containerd/opt"\n')


def own_containerd_config(base: str, d: str, sandbox_image: str) -> str:
    """base (a version 2 config.toml) with its own root, state, sockets and opt dir, and the
    CRI settings this VM needs: restrict_oom_score_adj (the VM refuses negative oom_score_adj)
    and a sandbox image that exists locally (no registry)."""
    lines = []
    cri = '[plugins."io.containerd.grpc.v1.cri"]'
    seen_cri = False
    for line in base.splitlines():
        s = line.strip()
        if s.startswith("path = ") and "/var/lib/containerd/opt" in s:
            line = line.replace("/var/lib/containerd/opt", f"{d}/opt")
        lines.append(line)
        if s == cri:
            seen_cri = True
            ind = line[: len(line) - len(line.lstrip())] + "  "
            lines += [f"{ind}restrict_oom_score_adj = true",
                      f'{ind}sandbox_image = "{sandbox_image}"']
    head = [f'root = "{d}/root"', f'state = "{d}/state"']
    tail = ["", "[grpc]", f'  address = "{d}/containerd.sock"', "", "[ttrpc]",
            f'  address = "{d}/containerd.sock.ttrpc"', "", "[debug]", '  address = ""']
    if not seen_cri:
        tail += ["", cri, "  restrict_oom_score_adj = true", f'  sandbox_image = "{sandbox_image}"']
    # top-level keys must precede every table
    at = next((i for i, line in enumerate(lines) if line.strip().startswith("[")), len(lines))
    return "\n".join(lines[:at] + head + lines[at:] + tail) + "\n"


class Containerd:
    def __init__(self, config_file: str, dir: str, install_dest: str | None = None,
                 env: dict[str, str] | None = None):
        self.dir = dir
        self.sock = f"{dir}/containerd.sock"
        self.log = f"{dir}/containerd.log"
        self.config_file = config_file
        self.dest = install_dest
        self.env = env or {}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> "Containerd":
        binds = []
        if self.dest:
            binds.append(f"mount --bind {self.dest}/usr/local/bin /usr/local/bin")
        script = " && ".join(binds + ['exec "$@"'])
        env = {"PATH": PATH, "HOME": "/root", **self.env}
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
                 CONTAINERD, "--config", self.config_file, "--log-level", "info"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        _wait(lambda: self.ctr(["version"], timeout=10).returncode == 0, timeout, "containerd",
              self.proc, self.log)
        return self

    def ctr(self, args: list[str], ns: str = "default", timeout: float = 120,
            **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        return subprocess.run([CTR, "--address", self.sock, "--namespace", ns, *args], text=True,
                              timeout=timeout, env={"PATH": PATH}, **kw)

    def dump(self) -> subprocess.CompletedProcess:
        return subprocess.run([CONTAINERD, "--config", self.config_file, "config", "dump"],
                              capture_output=True, text=True, timeout=30)

    def stop(self) -> None:
        if self.proc:
            for ns in ("default", "k8s.io"):
                tasks = self.ctr(["tasks", "ls", "-q"], ns=ns, timeout=30).stdout.split()
                for t in tasks:
                    self.ctr(["tasks", "kill", "-s", "KILL", t], ns=ns, timeout=30)
                for t in tasks:
                    self.ctr(["tasks", "delete", "-f", t], ns=ns, timeout=30)
                for c in self.ctr(["containers", "ls", "-q"], ns=ns, timeout=30).stdout.split():
                    self.ctr(["containers", "delete", c], ns=ns, timeout=30)
            _stop(self.proc)
        _rmtree(self.dir)


def tool_missing(*paths: str) -> str | None:
    for p in paths:
        if not (os.path.isabs(p) and os.access(p, os.X_OK)) and not shutil.which(p):
            return p
    return None
