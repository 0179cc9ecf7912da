"""Issue 12, item 2 and 4: Debian's real NVIDIA 535 packages (and the .run layout made from
them) given to real podman containers by nvbind's precreate hook.

What a GPU program in the container needs is checked the way the program would: the real
nvidia-smi runs (and fails only for want of a kernel driver), the real libraries are
dlopen()ed by soname, the loaders' JSON files name libraries that load, the Vulkan loader
reads the ICD, and the ld cache survives ldconfig and dpkg inside the container.
"""
import json
import os
import re

import pytest

from realenv import debian_host, host, nvbind, real, real_state  # noqa: F401 (fixtures)

# nvidia-smi's own words when /dev/nvidiactl answers ENXIO (no kernel module): verified by
# running Debian's 535.261.03 nvidia-smi in these containers.
SMI_NO_DRIVER = "couldn't communicate with the NVIDIA driver"


def test_nvidia_smi_on_path_fails_only_for_the_driver(host):
    r = host.run("command -v nvidia-smi; nvidia-smi; echo rc=$?", caps="utility")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    lines = r.stdout.splitlines()
    assert lines[0] == "/usr/bin/nvidia-smi", out
    assert SMI_NO_DRIVER in out, out
    assert "rc=9" in out, out          # nvidia-smi's exit status for "no driver"
    assert "not found" not in out and "error while loading shared libraries" not in out, out


@pytest.mark.parametrize("image", ["plain", "glvnd"])
def test_compute_and_utility_libraries_load(host, image):
    r = host.run("dlcheck libcuda.so.1 libnvidia-ml.so.1 libnvidia-ptxjitcompiler.so.1",
                 caps="compute,utility", image=image)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("OK ") == 3


def test_graphics_libraries_load(host):
    r = host.run("dlcheck libGLX_nvidia.so.0 libEGL_nvidia.so.0 libGLESv2_nvidia.so.2",
                 caps="graphics", image="glvnd")
    assert r.returncode == 0, r.stdout + r.stderr


LOADER_FILES = ("/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d", "/usr/share/vulkan/implicit_layer.d",
                "/etc/vulkan/implicit_layer.d", "/usr/share/glvnd/egl_vendor.d",
                "/etc/glvnd/egl_vendor.d", "/usr/share/egl/egl_external_platform.d",
                "/etc/OpenCL/vendors")


def test_every_mounted_loader_file_names_a_library_that_loads(host):
    """ICD/vendor JSON files and the OpenCL .icd given to the container, each one's
    library_path dlopen()ed (as the glvnd, Vulkan, EGL and OpenCL loaders would)."""
    mounted = [p for p in host.mounted("all", image="glvnd") if p.startswith(LOADER_FILES)]
    assert mounted, "no loader files mounted for NVIDIA_DRIVER_CAPABILITIES=all"
    script = []
    for p in mounted:
        if p.endswith(".icd"):
            script.append(f"dlcheck $(cat {p})")
        else:
            script.append(f"dlcheck $(grep -o '\"library_path\" *: *\"[^\"]*\"' {p} | cut -d'\"' -f4)")
    r = host.run("; ".join(s + " || echo BAD" for s in script), caps="all", image="glvnd")
    assert "BAD" not in r.stdout and "FAIL" not in r.stdout, (mounted, r.stdout, r.stderr)
    assert r.stdout.count("OK ") >= len(mounted)


def test_vulkan_loader_finds_the_icd(host):
    """Debian's Vulkan loader (vulkaninfo in the image) reads nvidia_icd.json and loads the
    library it names; creating an instance then fails for want of a kernel driver."""
    r = host.run("VK_LOADER_DEBUG=driver vulkaninfo --summary 2>&1; true", caps="graphics",
                 image="glvnd")
    out = r.stdout
    assert "nvidia_icd.json" in out, out
    assert re.search(r"libGLX_nvidia\.so\.0", out), out
    assert "Failed to open dynamic library" not in out and "wrong ELF class" not in out, out


@pytest.mark.parametrize("caps", ["utility", "compute", "graphics", "video"])
def test_gsp_firmware_of_the_running_version(host, caps):
    """NVIDIA's library gives the GSP firmware to every GPU container (nvc_info.c
    lookup_firmwares is not tied to a capability)."""
    fw = f"/lib/firmware/nvidia/{host.version}"
    r = host.run(f"ls {fw}", caps=caps)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(r.stdout.split()) == sorted(os.listdir(host.root + fw))


def test_ld_cache_survives_ldconfig_and_dpkg_in_the_container(host):
    script = ("dlcheck libcuda.so.1 libnvidia-ml.so.1 && ldconfig && echo LDCONFIG-DONE && "
              "dlcheck libcuda.so.1 libnvidia-ml.so.1 && dpkg -i /debs/*.deb >/dev/null && "
              "echo DPKG-DONE && dlcheck libcuda.so.1 libnvidia-ml.so.1 libyaml-0.so.2")
    r = host.run(script, caps="compute,utility")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "LDCONFIG-DONE" in r.stdout and "DPKG-DONE" in r.stdout
    assert r.stdout.count("OK libcuda.so.1") == 3


def test_persistenced_socket_gone_container_still_starts(debian_host):
    """Item 4: the cache was made while nvidia-persistenced ran; then it stopped."""
    import simhost
    h = debian_host
    sock = h.root + "/run/nvidia-persistenced/socket"
    simhost.unix_socket(sock)
    r = h.run("test -S /run/nvidia-persistenced/socket && echo SOCKET", caps="utility")
    assert r.returncode == 0 and "SOCKET" in r.stdout, r.stdout + r.stderr
    os.unlink(sock)
    try:
        info = nvbind(["--root", h.root, "info", "--json"], env={"NVBIND_CACHE_DIR": h.cache_dir})
        assert json.loads(info.stdout)["cache"]["state"] != "fresh", "cache blind to the socket"
        r = h.run("test -e /run/nvidia-persistenced/socket || echo NO-SOCKET; nvidia-smi -L; true",
                  caps="utility")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "NO-SOCKET" in r.stdout
    finally:
        simhost.unix_socket(sock)
