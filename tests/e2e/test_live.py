"""createRuntime / prestart live injection with real runc and crun, cgroup v1 and v2."""
import json
import os
import shutil
import uuid

import pytest

from conftest import mountinfo, tree

CHECK = ("stat -c '%t:%T' /dev/nvidia1; gpucheck /dev/nvidia1 /dev/nvidia0 /mnt/gpu0; "
         "grep ' /usr/lib64/libcuda.so.550.54.14 ' /proc/mounts")


@pytest.fixture
def live(live_env, tmp_path):
    """Runs one container through a runtime with nvbind as its createRuntime/prestart hook."""
    root, image = live_env
    before_mounts, before_host = mountinfo(), tree(root)

    def run(runtime="runc", env=("NVIDIA_VISIBLE_DEVICES=1",), stage="createRuntime",
            args=("/bin/sh", "-c", CHECK), rootfs=image, hook=True, extra_env=()):
        import engines
        log = str(tmp_path / "nvbind.log")
        hooks = {stage: [engines.nvbind_hook(stage, root, log, list(extra_env))]} if hook else None
        gpu0 = {"destination": "/mnt/gpu0", "type": "bind", "source": f"{root}/dev/nvidia0",
                "options": ["bind"]}
        bundle = engines.make_bundle(str(tmp_path / f"b-{uuid.uuid4().hex[:6]}"), rootfs, list(args),
                                     list(env), hooks, [gpu0])
        r = engines.run_bundle(bundle, f"nvb-{uuid.uuid4().hex[:8]}", runtime)
        r.log = open(log).read().splitlines() if os.path.exists(log) else []
        r.bundle = bundle
        return r
    yield run
    assert mountinfo() == before_mounts, "the host gained or lost mounts"
    assert tree(root) == before_host, "the simulated host root changed"


def check_gpu1(r):
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout.splitlines()
    assert out[0] == "c3:1"
    assert "open /dev/nvidia1: ENXIO" in out          # the cgroup allowed it
    assert "open /dev/nvidia0: ENOENT" in out
    assert "open /mnt/gpu0: EPERM" in out              # GPU 0's node: refused by the cgroup
    assert any(line.startswith("dlopen libcuda.so.1: OK") for line in out), out
    mount = next(line for line in out if "libcuda.so.550.54.14" in line)
    assert {"ro", "nosuid", "nodev"} <= set(mount.split()[3].split(","))


@pytest.mark.parametrize("runtime", ["runc", "crun", "runc-v2"])
def test_create_runtime(live, runtime):
    r = live(runtime)
    check_gpu1(r)
    entry = json.loads(r.log[-1])
    assert entry["stage"] == "createRuntime" and entry["outcome"] == "ok"
    assert entry["env_not_applied"] == ["NVBIND_CAPABILITIES", "NVBIND_GPUS", "NVBIND_PROFILE"]
    assert ("cgroup v2" if runtime == "runc-v2" else "cgroup v1") in entry["done"][0]
    # the hook wrote that as a note on stderr and exited 0: runc and crun (1.8.1) both run
    # the container and show neither stream of a hook that succeeds, so the log line is
    # where an operator reads it
    assert "nvbind: note:" not in r.stdout + r.stderr


def test_prestart_is_the_same(live):
    check_gpu1(live("runc", stage="prestart"))


@pytest.mark.parametrize("runtime", ["runc", "runc-v2"])
def test_without_nvbind_the_cgroup_refuses(live, live_env, runtime):
    """Control: the node bind-mounted in without a rule gives EPERM under v1 and v2."""
    root, _ = live_env
    r = live(runtime, hook=False, args=("gpucheck", "/mnt/gpu0"))
    assert "open /mnt/gpu0: EPERM" in r.stdout, r.stdout + r.stderr


def test_no_request_untouched(live):
    r = live("runc", env=(), args=("/bin/sh", "-c", "ls /dev; ls /usr/lib64 2>&1; true"))
    assert r.returncode == 0 and "nvidia" not in r.stdout


def test_killed_mid_injection_leaves_no_trace(live):
    r = live("runc", extra_env=["NVBIND_TEST_KILL_AT=mount"])
    assert r.returncode != 0
    assert "killed by signal 9" in r.stderr
    check_gpu1(live("runc"))        # and the next container works


def _evil(tmp_path, image, host_dir, setup):
    rootfs = str(tmp_path / "evil-rootfs")
    shutil.copytree(image, rootfs, symlinks=True)
    setup(rootfs, host_dir)
    return rootfs


@pytest.mark.parametrize("case", ["lib-dir-link", "lib-dir-proc-link", "ldconf-link", "ldcache-link"])
def test_malicious_rootfs_stays_inside(live, live_env, tmp_path, case):
    _, image = live_env
    host_dir = tmp_path / "HOSTDIR"
    host_dir.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("host file\n")

    def setup(rootfs, host):
        if case == "lib-dir-link":            # CVE-2024-0133/0134 shape
            os.symlink(str(host), f"{rootfs}/usr/lib64")
        elif case == "lib-dir-proc-link":     # CVE-2025-23359 shape
            os.symlink(f"/proc/1/root{host}", f"{rootfs}/usr/lib64")
        elif case == "ldconf-link":           # CVE-2025-23267 shape
            shutil.rmtree(f"{rootfs}/etc/ld.so.conf.d")
            os.symlink(f"../../../../../../{host}", f"{rootfs}/etc/ld.so.conf.d")
        elif case == "ldcache-link":
            os.unlink(f"{rootfs}/etc/ld.so.cache")
            os.symlink(f"/proc/1/root{victim}", f"{rootfs}/etc/ld.so.cache")
    rootfs = _evil(tmp_path, image, host_dir, setup)
    live("runc", rootfs=rootfs, args=("/bin/sh", "-c", "gpucheck /dev/nvidia1"))
    assert os.listdir(host_dir) == []
    assert victim.read_text() == "host file\n"


def test_dev_symlink_in_image(live, live_env, tmp_path):
    """runc CVE-2026-41579 shape: /dev in the image is a link to a host directory.

    The runc 1.1.5 of Debian 12 itself still follows it and leaves its stdio links
    (stdin, stdout, stderr, fd, ptmx) there; nvbind must add nothing of its own."""
    _, image = live_env
    host_dev = tmp_path / "hostdev"
    host_dev.mkdir()

    def setup(rootfs, _):
        shutil.rmtree(f"{rootfs}/dev")
        os.symlink(str(host_dev), f"{rootfs}/dev")
    rootfs = _evil(tmp_path, image, host_dev, setup)
    live("runc", rootfs=rootfs, args=("true",))
    ours = [n for n in os.listdir(host_dev) if "nvidia" in n or n == "dri"]
    assert ours == []
    assert not [n for n in os.listdir(host_dev) if os.path.exists(host_dev / n)
                and not os.path.islink(host_dev / n)]


def test_podman_create_runtime_hooks_d(podman_live):
    pm = podman_live
    r = pm.run(["/bin/sh", "-c", "gpucheck /dev/nvidia1 /dev/nvidia0; env | grep -c NVBIND_ || true"],
               env={"NVIDIA_VISIBLE_DEVICES": "1"})
    assert r.returncode == 0, r.stderr
    assert "open /dev/nvidia1: ENXIO" in r.stdout and "open /dev/nvidia0: ENOENT" in r.stdout
    assert "dlopen libcuda.so.1: OK" in r.stdout
    assert r.stdout.splitlines()[-1] == "0"     # env cannot be set at createRuntime
    with open(pm.log) as f:
        stages = [json.loads(line)["stage"] for line in f]
    assert "createRuntime" in stages and "precreate" not in stages
