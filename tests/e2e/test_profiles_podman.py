"""Profiles end to end: podman (precreate) runs an ai-ml and a gaming container."""
import json
import os
import subprocess

from conftest import nvbind_cmd


def test_ai_ml_container(podman_env):
    _root, pm = podman_env
    r = pm.run(["/bin/sh", "-c", "env | sort; gpucheck /dev/nvidia0"],
               env={"NVIDIA_VISIBLE_DEVICES": "0"}, extra=["--annotation", "nvbind.io/profile=ai-ml"])
    assert r.returncode == 0, r.stderr
    env = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    assert env["CUDA_CACHE_MAXSIZE"] == str(4096 << 20)
    assert env["NVBIND_PROFILE"] == "ai-ml" and env["NVBIND_MIXED_PRECISION"] == "1"
    assert env["NVBIND_CAPABILITIES"] == "compute,utility"
    assert "open /dev/nvidia0: ENXIO" in r.stdout and "dlopen libcuda.so.1: OK" in r.stdout


def test_gaming_container(podman_env):
    _root, pm = podman_env
    script = ("env | sort; ls /dev/dri /usr/lib64/nvidia/wine; cat /usr/share/vulkan/icd.d/nvidia_icd.json;"
              " gpucheck /dev/nvidia1 /dev/nvidia-modeset /dev/dri/card2 /dev/dri/card1")
    r = pm.run(["/bin/sh", "-c", script], env={"NVIDIA_VISIBLE_DEVICES": "1", "NVBIND_PROFILE": "gaming"})
    assert r.returncode == 0, r.stderr
    out = r.stdout
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line and " " not in line)
    assert env["PROTON_ENABLE_NVAPI"] == "1" and env["DXVK_ENABLE_NVAPI"] == "1"
    assert env["__GL_SHADER_DISK_CACHE"] == "1" and env["__GL_SYNC_TO_VBLANK"] == "1"
    assert "card2" in out and "renderD129" in out
    assert "nvngx.dll" in out and "_nvngx.dll" in out
    assert '"library_path": "libGLX_nvidia.so.0"' in out
    assert "open /dev/nvidia-modeset: ENXIO" in out and "open /dev/dri/card2: ENXIO" in out
    assert "open /dev/dri/card1: ENOENT" in out


def test_cuda_forward_compat(live_env, tmp_path):
    """A newer libcuda in the image's /usr/local/cuda/compat wins through the ld cache; an older
    one does not; nothing from the image is mounted or run."""
    root, image = live_env
    for compat_version, expect in (("560.35.03", "version=12060"), ("470.82.01", "version=12040")):
        rootfs = tmp_path / f"rootfs-{compat_version}"
        subprocess.run(["cp", "-a", image, str(rootfs)], check=True)
        compat = rootfs / "usr/local/cuda/compat"
        compat.mkdir(parents=True)
        src = tmp_path / "libcuda_compat.c"
        with open(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
                               "tools/csrc/libcuda.c")) as f:
            src.write_text(f.read().replace("*version = 12040", "*version = 12060"))
        subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o",
                        str(compat / f"libcuda.so.{compat_version}"), str(src)], check=True)
        os.symlink(f"libcuda.so.{compat_version}", compat / "libcuda.so.1")
        # what the precreate mounts put in place: the host driver's libcuda
        (rootfs / "usr/lib64").mkdir(exist_ok=True)
        subprocess.run(["cp", f"{root}/usr/lib64/libcuda.so.550.54.14", str(rootfs / "usr/lib64")], check=True)
        bundle = tmp_path / f"bundle-{compat_version}"
        bundle.mkdir()
        (bundle / "config.json").write_text(json.dumps({"process": {"env": []}, "root": {"path": str(rootfs)}}))
        state = json.dumps({"ociVersion": "1.2.0", "id": "c", "status": "creating", "pid": 1,
                            "bundle": str(bundle)})
        r = subprocess.run(nvbind_cmd() + ["--log", "off", "hook", "createContainer", "--folder", "/usr/lib64",
                                           "--link", "libcuda.so.550.54.14::/usr/lib64/libcuda.so.1",
                                           "--driver-version", "550.54.14"],
                           input=state, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
        assert r.returncode == 0, r.stderr
        out = subprocess.run(["chroot", str(rootfs), "gpucheck"], capture_output=True, text=True).stdout
        assert expect in out, (compat_version, out)
        conf = rootfs / "etc/ld.so.conf.d/00-nvbind-cuda-compat.conf"
        assert conf.exists() == (expect == "version=12060")
