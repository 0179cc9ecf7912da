"""podman runs nvbind as its precreate hook (hooks.d); containers see what they asked for."""
import json
import os


def test_gpu_1_visible_openable_and_libcuda_loads(podman_env):
    root, pm = podman_env
    script = ("stat -c '%F %t:%T %a' /dev/nvidia1; gpucheck /dev/nvidia1 /dev/nvidia0 /dev/nvidiactl;"
              " grep ' /usr/lib64/libcuda.so.550.54.14 ' /proc/mounts; env | grep ^NVBIND_ | sort")
    r = pm.run(["/bin/sh", "-c", script], env={"NVIDIA_VISIBLE_DEVICES": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout.splitlines()
    host = os.stat(root + "/dev/nvidia1").st_rdev
    assert out[0] == f"character special file {os.major(host):x}:{os.minor(host):x} 666"
    # ENXIO: the cgroup let the open through and the (absent) driver answered; EPERM would
    # mean the device cgroup refused it
    assert "open /dev/nvidia1: ENXIO" in out
    assert "open /dev/nvidia0: ENOENT" in out
    assert "open /dev/nvidiactl: ENXIO" in out
    assert any(line.startswith("dlopen libcuda.so.1: OK cuInit=0") for line in out), out
    mount = next(line for line in out if "libcuda.so.550.54.14" in line)
    assert {"ro", "nosuid", "nodev"} <= set(mount.split()[3].split(","))
    assert any(line.startswith("NVBIND_GPUS=GPU-") for line in out)


def test_cgroup_rule_is_exact(podman_env):
    """GPU 0's node, smuggled in by a volume, is refused by the device cgroup (EPERM)."""
    root, pm = podman_env
    r = pm.run(["gpucheck", "/mnt/gpu0", "/dev/nvidia1"], env={"NVIDIA_VISIBLE_DEVICES": "1"},
               extra=["--volume", f"{root}/dev/nvidia0:/mnt/gpu0"])
    assert "open /mnt/gpu0: EPERM" in r.stdout, r.stdout + r.stderr
    assert "open /dev/nvidia1: ENXIO" in r.stdout


def test_container_without_request_is_untouched(podman_env):
    _root, pm = podman_env
    r = pm.run(["/bin/sh", "-c", "ls /dev; ls /usr/lib64 2>&1; env; gpucheck"])
    assert "nvidia" not in r.stdout.replace("dlopen libcuda.so.1", "")
    assert "NVBIND_" not in r.stdout
    assert "dlopen libcuda.so.1: FAILED" in r.stdout
    assert r.returncode == 1


def test_unknown_device_fails_the_create_with_the_reason(podman_env):
    _root, pm = podman_env
    r = pm.run(["true"], env={"NVIDIA_VISIBLE_DEVICES": "5"})
    assert r.returncode != 0
    assert "hook precreate" in r.stderr and "exit status 2" in r.stderr
    # podman drops the hook's stderr; the log line says why
    with open(pm.log) as f:
        last = json.loads(f.read().splitlines()[-1])
    assert last["stage"] == "precreate" and last["outcome"] == "error"
    assert "unknown device '5'" in last["error"] and "0000:11:00.0" in last["error"]


def test_mig_instance(podman_env):
    _root, pm = podman_env
    r = pm.run(["/bin/sh", "-c", "ls /dev/nvidia-caps; gpucheck /dev/nvidia0 /dev/nvidia1"],
               env={"NVIDIA_VISIBLE_DEVICES": "0:0"})
    assert r.returncode == 0, r.stderr
    assert "nvidia-cap13" in r.stdout and "nvidia-cap14" in r.stdout and "nvidia-cap23" not in r.stdout
    assert "open /dev/nvidia0: ENXIO" in r.stdout and "open /dev/nvidia1: ENOENT" in r.stdout
