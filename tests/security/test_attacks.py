"""Every attack in ../shared/reference/SECURITY.md, through every door nvbind has.

Doors: precreate in podman, createRuntime in runc and crun, the runtime shim (runc
underneath). Each case is a malicious rootfs (or environment); afterwards the host must be
unchanged: no new or changed files in the host directories the image points at, the
simulated host root unchanged, no new mounts in the host namespace, no marker written by
attacker code, and the hashes of the host binaries nvbind could run unchanged.
"""
import hashlib
import json
import os
import shutil
import subprocess
import time
import uuid

import pytest

from conftest import IS_ROOT, REPO, mountinfo, nvbind_cmd, tree

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="runs real containers: needs root")
DOORS = ["podman", "runc", "crun", "shim"]
VERSION = "550.54.14"


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def world(live_env, tmp_path_factory):
    """Shared: simulated host, clean image, podman with a precreate hooks dir."""
    import engines
    root, image = live_env
    base = tmp_path_factory.mktemp("attacks")
    _, pm = engines.prepare(str(base / "podman"), root=root, rootfs=image)
    w = {"root": root, "image": image, "base": base, "podman": pm}
    yield w
    for p in (pm, w.get("frozen_podman")):
        if p:
            subprocess.run(p.base() + ["system", "reset", "--force"], capture_output=True)
    if w.get("frozen_podman"):
        shutil.rmtree(w["frozen_podman"].state, ignore_errors=True)


class Run:
    def __init__(self, world, tmp_path, exe=None):
        self.w, self.tmp, self.exe = world, tmp_path, exe

    def __call__(self, door, rootfs, args, env=()):
        import engines
        w, tmp = self.w, self.tmp
        env = ["NVIDIA_VISIBLE_DEVICES=1", *env]
        cid = f"atk-{uuid.uuid4().hex[:8]}"
        log = str(tmp / "nvbind.log")
        if door == "podman":
            pm = w["podman"]
            if self.exe:
                if "frozen_podman" not in w:     # podman wants a short runroot path
                    import tempfile
                    w["frozen_podman"] = engines.prepare(tempfile.mkdtemp(prefix="nvbf", dir="/tmp"),
                                                         exe=self.exe, root=w["root"], rootfs=w["image"])[1]
                pm = w["frozen_podman"]
            tag = f"localhost/atk-{uuid.uuid4().hex[:8]}:latest"
            pm.import_rootfs(rootfs, tag)
            extra = []
            for e in env:
                extra += ["--env", e]
            r = pm.run(list(args), image=tag, extra=extra)
            subprocess.run(pm.base() + ["rmi", "-f", tag], capture_output=True)
            return r
        hooks = None
        if door in ("runc", "crun"):
            hooks = {"createRuntime": [engines.nvbind_hook("createRuntime", w["root"], log, exe=self.exe)]}
        bundle = engines.make_bundle(str(tmp / cid), rootfs, list(args), env, hooks)
        if door in ("runc", "crun"):
            return engines.run_bundle(bundle, cid, door)
        # the shim, driven as containerd does
        state = str(tmp / "shim-state")
        shim_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "NVBIND_ROOT": w["root"], "NVBIND_LOG": log}
        cmd = [self.exe, "runtime"] if self.exe else nvbind_cmd() + ["runtime"]
        out = open(tmp / f"{cid}.out", "w")
        c = subprocess.run(cmd + ["--root", state, "create", "--bundle", bundle, cid], stdout=out, stderr=out,
                           stdin=subprocess.DEVNULL, env=shim_env, timeout=60)
        if c.returncode == 0:
            subprocess.run(cmd + ["--root", state, "start", cid], env=shim_env, timeout=60)
            for _ in range(100):
                st = subprocess.run(["runc", "--root", state, "state", cid], capture_output=True, text=True)
                if '"stopped"' in st.stdout or st.returncode:
                    break
                time.sleep(0.05)
        subprocess.run(cmd + ["--root", state, "delete", "--force", cid], env=shim_env, capture_output=True)
        out.close()
        text = open(tmp / f"{cid}.out").read()
        return subprocess.CompletedProcess(cmd, c.returncode, text, text)


@pytest.fixture
def guard(world, tmp_path):
    """The host directories an image may point at, and a check that the host is unchanged."""
    host_dir = tmp_path / "HOSTDIR"
    host_dir.mkdir()
    (host_dir / "secret").write_text("host secret\n")
    victim = tmp_path / "victim"
    victim.write_text("host file\n")
    marker = f"/tmp/nvbind-owned-{uuid.uuid4().hex}"
    watched = [str(host_dir), str(victim)]
    ldconfig = "/sbin/ldconfig"
    before = ({p: tree(p) if os.path.isdir(p) else sha(p) for p in watched}, tree(world["root"]),
              mountinfo(), sha(os.path.realpath(ldconfig)), sha(nvbind_cmd()[0]))
    g = {"host_dir": str(host_dir), "victim": str(victim), "marker": marker}
    yield g
    after = ({p: tree(p) if os.path.isdir(p) else sha(p) for p in watched}, tree(world["root"]),
             mountinfo(), sha(os.path.realpath(ldconfig)), sha(nvbind_cmd()[0]))
    assert not os.path.exists(marker), "attacker code ran on the host"
    assert after[0] == before[0], "a host directory or file the image points at changed"
    assert after[1] == before[1], "the host root changed"
    assert after[2] == before[2], "the host gained or lost mounts"
    assert after[3:] == before[3:], "a host binary changed"


def evil(world, tmp_path, setup):
    rootfs = str(tmp_path / f"evil-{uuid.uuid4().hex[:6]}")
    shutil.copytree(world["image"], rootfs, symlinks=True)
    setup(rootfs)
    return rootfs


def _link(rootfs, path, target):
    full = rootfs + path
    if os.path.isdir(full) and not os.path.islink(full):
        shutil.rmtree(full)
    elif os.path.lexists(full):
        os.unlink(full)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    os.symlink(target, full)


CASES = {
    # compat libraries linked through /proc/1/cwd to host files must never be mounted or read
    "CVE-2024-0132": lambda r, g: (
        _link(r, "/usr/local/cuda/compat/libcuda.so.999.1.1", f"/proc/1/cwd{g['host_dir']}/secret"),
        _link(r, "/usr/local/cuda/compat/libnvidia-ml.so.1", "/")),
    # a mount target's directory is a link out of the rootfs
    "CVE-2024-0133": lambda r, g: _link(r, f"/lib/firmware/nvidia/{VERSION}", f"/../../../../{g['host_dir']}"),
    # the directory of a link nvbind creates is a link to a host directory
    "CVE-2024-0134": lambda r, g: _link(r, "/usr/lib64", g["host_dir"]),
    # the image's own ldconfig must never run (0135/0136/0137)
    "CVE-2024-0136": lambda r, g: [
        (os.makedirs(os.path.dirname(r + p), exist_ok=True),
         open(r + p, "w").write(f"#!/bin/sh\necho owned > {g['marker']}\n"), os.chmod(r + p, 0o755))
        for p in ("/sbin/ldconfig", "/sbin/ldconfig.real", "/usr/sbin/ldconfig")],
    # directory-level links through /proc/1/root on every directory nvbind writes to
    "CVE-2025-23359": lambda r, g: [
        _link(r, p, f"/proc/1/root{g['host_dir']}") for p in
        ("/usr/local/cuda", "/usr/lib64", "/lib/firmware", "/etc/ld.so.conf.d", "/run/nvidia-persistenced",
         "/usr/share/vulkan", "/etc/OpenCL")],
    # the ld-cache update must not follow links out of the root
    "CVE-2025-23267": lambda r, g: (
        _link(r, "/etc/ld.so.cache", f"/proc/1/root{g['victim']}"),
        _link(r, "/etc/ld.so.conf.d", f"../../../../../..{g['host_dir']}")),
    # /dev in the image is a link to a host directory (runc CVE-2026-41579)
    "runc-CVE-2026-41579": lambda r, g: _link(r, "/dev", g["host_dir"] + "/dev"),
}


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_malicious_rootfs(world, tmp_path, guard, door, case):
    if case == "runc-CVE-2026-41579":
        os.makedirs(guard["host_dir"] + "/dev")
    rootfs = evil(world, tmp_path, lambda r: CASES[case](r, guard))
    run = Run(world, tmp_path)
    r = run(door, rootfs, ["/bin/sh", "-c", "cat /usr/local/cuda/compat/libcuda.so.999.1.1 2>&1; "
                                            f"test -e {guard['marker']} && echo INSIDE-MARKER; true"])
    assert "host secret" not in (r.stdout or ""), "a host file was readable inside"
    assert "INSIDE-MARKER" not in (r.stdout or ""), "the image's ldconfig ran"
    if case == "runc-CVE-2026-41579":
        # Debian's runc 1.1.5 itself leaves stdio links there (its own CVE); nvbind adds nothing
        d = guard["host_dir"] + "/dev"
        assert not [n for n in os.listdir(d) if not os.path.islink(os.path.join(d, n))]
        for n in os.listdir(d):
            os.unlink(os.path.join(d, n))
        os.rmdir(d)


@pytest.mark.parametrize("exe", ["source", "frozen"])
@pytest.mark.parametrize("door", DOORS)
def test_container_environment_never_reaches_the_hook(world, tmp_path, guard, door, exe):
    """NVIDIAScape (CVE-2025-23266): LD_PRELOAD and friends in the container's env."""
    frozen = None
    if exe == "frozen":
        frozen = os.path.join(REPO, "dist", "nvbind-dir", "nvbind")
        if not os.path.exists(frozen):
            pytest.skip("dist/ not built")
    marker = guard["marker"]
    src = tmp_path / "poc.c"
    src.write_text('#include <fcntl.h>\n#include <unistd.h>\n__attribute__((constructor)) static void owned(void)'
                   f'{{ int fd = open("{marker}", O_CREAT|O_WRONLY, 0644); if (fd >= 0) {{ write(fd, "owned", 5); close(fd); }} }}\n')

    def setup(r):
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", f"{r}/poc.so", str(src)], check=True)
        os.makedirs(f"{r}/py", exist_ok=True)
        for name in ("sitecustomize.py", "usercustomize.py", "startup.py"):
            with open(f"{r}/py/{name}", "w") as f:
                f.write(f"open({marker!r}, 'w').write('owned')\n")
    rootfs = evil(world, tmp_path, setup)
    env = ["LD_PRELOAD=/proc/self/cwd/poc.so", "LD_AUDIT=/proc/self/cwd/poc.so",
           "LD_LIBRARY_PATH=/proc/self/cwd", "PYTHONPATH=/proc/self/cwd/py",
           "PYTHONHOME=/proc/self/cwd/py", "PYTHONSTARTUP=/proc/self/cwd/py/startup.py"]
    r = Run(world, tmp_path, frozen)(door, rootfs, ["/bin/sh", "-c", "ls /dev/nvidia1"], env)
    assert "/dev/nvidia1" in (r.stdout or ""), r.stdout + (r.stderr or "")


@pytest.mark.parametrize("door", ["runc", "podman"])
def test_no_leaked_fd_or_host_cwd(world, tmp_path, guard, door):
    """runc CVE-2024-21626: nothing of the hook's stays in the container's processes."""
    r = Run(world, tmp_path)(door, world["image"],
                             ["/bin/sh", "-c", "ls /proc/self/fd; echo cwd=$(readlink /proc/1/cwd)"])
    assert r.returncode == 0, r.stderr
    fds = [line for line in r.stdout.split() if line.isdigit()]
    assert set(fds) <= {"0", "1", "2", "3"}, fds     # 3: ls's own directory fd
    assert "cwd=/" in r.stdout


def test_racer_swapping_directories(world, tmp_path, guard):
    """CVE-2026-24260 / runc CVE-2021-30465: a process swaps directories nvbind writes to for
    links to a host directory (renameat2 RENAME_EXCHANGE) while 200 containers start."""
    import engines
    host = guard["host_dir"]
    rootfs = str(tmp_path / "racy")
    shutil.copytree(world["image"], rootfs, symlinks=True)
    pairs = []
    for d in ("/usr/lib64", f"/lib/firmware/nvidia/{VERSION}", "/etc/ld.so.conf.d"):
        os.makedirs(rootfs + d, exist_ok=True)
        os.symlink(host, rootfs + d + ".evil")
        pairs.append((rootfs + d, rootfs + d + ".evil"))
    racer = subprocess.Popen([os.path.join(REPO, ".venv", "bin", "python") if os.path.exists(
        os.path.join(REPO, ".venv", "bin", "python")) else "python3", "-c", RACER, json.dumps(pairs)])
    log = str(tmp_path / "log")
    bundle = engines.make_bundle(str(tmp_path / "b"), world["image"], ["true"], ["NVIDIA_VISIBLE_DEVICES=1"],
                                 {"createRuntime": [engines.nvbind_hook("createRuntime", world["root"], log)]})
    with open(f"{bundle}/config.json") as f:
        cfg = json.load(f)
    cfg["root"]["path"] = rootfs
    with open(f"{bundle}/config.json", "w") as f:
        json.dump(cfg, f)
    ok = 0
    try:
        for i in range(200):
            r = engines.run_bundle(bundle, f"race-{i}")
            ok += r.returncode == 0
    finally:
        racer.kill()
        racer.wait()
    assert os.listdir(host) == ["secret"]
    assert ok > 0     # some starts win the race cleanly; the rest fail closed


RACER = r"""
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
pairs = [(a.encode(), b.encode()) for a, b in json.loads(sys.argv[1])]
AT_FDCWD, RENAME_EXCHANGE = -100, 2
while True:
    for a, b in pairs:
        libc.syscall(316, AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE)   # renameat2
"""


def test_control_the_environment_attack_is_real(world, tmp_path):
    """Control for the test above: a createContainer hook entry *without* env, as NVIDIA's
    once were, does run the image's LD_PRELOAD library on the host under this runc. So the
    poison used above would show if nvbind's entries ever lost their env."""
    import engines
    marker = f"/tmp/nvbind-control-{uuid.uuid4().hex}"
    src = tmp_path / "poc.c"
    src.write_text('#include <fcntl.h>\n#include <unistd.h>\n__attribute__((constructor)) static void o(void)'
                   f'{{ int fd = open("{marker}", O_CREAT|O_WRONLY, 0644); if (fd >= 0) close(fd); }}\n')
    rootfs = evil(world, tmp_path, lambda r: subprocess.run(
        ["gcc", "-shared", "-fPIC", "-o", f"{r}/poc.so", str(src)], check=True))
    bundle = engines.make_bundle(str(tmp_path / "ctl"), rootfs, ["/bin/true"],
                                 ["LD_PRELOAD=/proc/self/cwd/poc.so"],
                                 {"createContainer": [{"path": shutil.which("true")}]})
    try:
        engines.run_bundle(bundle, f"ctl-{uuid.uuid4().hex[:6]}")
        assert os.path.exists(marker)
    finally:
        if os.path.exists(marker):
            os.unlink(marker)
