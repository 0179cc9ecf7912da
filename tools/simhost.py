#!/usr/bin/env python3
"""Build a simulated NVIDIA host root for machines without a GPU.

Everything in it is real of its kind: character device nodes made with mknod (major 195
for nvidia; opening one where no driver is loaded gives ENXIO), ELF libraries built by gcc
with the driver's sonames, an ld.so.cache written by `ldconfig -r`, and the driver's procfs
files in their real formats. Only the answers the libraries give are fake.

    tools/simhost.py ROOT [--gpus N] [--mig] [--driver VERSION] [--stale]

Needs root (mknod) and gcc. Prints the root's path.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import stat
import subprocess
import sys
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "csrc")
NVIDIA_MAJOR = 195
UVM_MAJOR = 508        # dynamic on real hosts; chosen free on the test machines
CAPS_MAJOR = 507
DRM_MAJOR = 226
LIBDIR = "/usr/lib64"  # RHEL-style: not on a Debian image's default search path
STALE_VERSION = "470.82.01"

LIBS = {  # file base -> soname (as the real driver ships them)
    "libcuda.so": "libcuda.so.1",
    "libnvidia-ml.so": "libnvidia-ml.so.1",
    "libnvidia-ptxjitcompiler.so": "libnvidia-ptxjitcompiler.so.1",
    "libnvidia-nvvm.so": "libnvidia-nvvm.so.4",
    "libnvidia-encode.so": "libnvidia-encode.so.1",
    "libnvcuvid.so": "libnvcuvid.so.1",
    "libnvidia-glcore.so": None,   # soname = file name, as the driver has it
    "libnvidia-tls.so": None,
    "libGLX_nvidia.so": "libGLX_nvidia.so.0",
    "libEGL_nvidia.so": "libEGL_nvidia.so.0",
    "libnvidia-ngx.so": "libnvidia-ngx.so.1",
}


def gpu_uuid(i: int) -> str:
    return "GPU-" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"nvbind-sim-gpu-{i}"))


def bus_id(i: int) -> str:
    return f"0000:{0x10 + i:02x}:00.0"


def write(root, path, text, mode=0o644):
    full = root + path
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as f:
        f.write(text)
    os.chmod(full, mode)


def mknod(root, path, major, minor, mode=0o666):
    full = root + path
    os.makedirs(os.path.dirname(full), exist_ok=True)
    if os.path.lexists(full):
        os.unlink(full)
    os.mknod(full, stat.S_IFCHR | mode, os.makedev(major, minor))
    os.chmod(full, mode)


def gcc(args):
    subprocess.run(["gcc", "-O1", "-w", *args], check=True)


def full_library_set() -> dict:
    """Every library nvbind knows (NVIDIA's lists), for benchmarks at full size."""
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "hook"))
    from nvbind.host.discover.libraries import LIBRARIES
    libs = dict(LIBS)
    for names in LIBRARIES.values():
        for base in names:
            libs.setdefault(base, base + ".1")
    return libs


def build(root: str, gpus: int, mig: bool, version: str, stale: bool, full: bool = False,
          mps: bool = False, mig_per_gpu: int = 0, filler_libs: int = 0) -> None:
    """mig: two MIG instances on GPU 0; mig_per_gpu: N instances on every GPU (scale);
    filler_libs: unrelated libraries beside the driver's (a crowded library directory)."""
    root = os.path.abspath(root)
    kernel(root, gpus, mig, version, mig_per_gpu)
    _userspace(root, version, stale, full, mps, filler_libs)


def kernel(root: str, gpus: int, mig: bool, version: str, mig_per_gpu: int = 0) -> None:
    """The kernel side only: /dev nodes, DRM by-path links, the driver's procfs files and
    /proc/devices (also used by tools/realhost.py under real driver packages)."""
    os.makedirs(root, exist_ok=True)
    # --- /dev
    mknod(root, "/dev/nvidiactl", NVIDIA_MAJOR, 255)
    mknod(root, "/dev/nvidia-modeset", NVIDIA_MAJOR, 254)
    mknod(root, "/dev/nvidia-uvm", UVM_MAJOR, 0)
    mknod(root, "/dev/nvidia-uvm-tools", UVM_MAJOR, 1)
    mig_lines = ["config 1", "monitor 2"]
    mknod(root, "/dev/nvidia-caps/nvidia-cap1", CAPS_MAJOR, 1, 0o400)
    mknod(root, "/dev/nvidia-caps/nvidia-cap2", CAPS_MAJOR, 2, 0o444)
    for i in range(gpus):
        mknod(root, f"/dev/nvidia{i}", NVIDIA_MAJOR, i)
        mknod(root, f"/dev/dri/card{i + 1}", DRM_MAJOR, i + 1)
        mknod(root, f"/dev/dri/renderD{128 + i}", DRM_MAJOR, 128 + i)
        bp = f"{root}/dev/dri/by-path"
        os.makedirs(bp, exist_ok=True)
        for kind, node in (("card", f"card{i + 1}"), ("render", f"renderD{128 + i}")):
            link = f"{bp}/pci-{bus_id(i)}-{kind}"
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink(f"../{node}", link)
        # --- /proc/driver/nvidia/gpus/<bus>/information (the driver's own layout)
        write(root, f"/proc/driver/nvidia/gpus/{bus_id(i)}/information",
              f"Model: \t\t NVIDIA H100 80GB HBM3\nIRQ:   \t\t {180 + i}\n"
              f"GPU UUID: \t {gpu_uuid(i)}\nVideo BIOS: \t 96.00.74.00.01\nBus Type: \t PCIe\n"
              f"DMA Size: \t 52 bits\nDMA Mask: \t 0xfffffffffffff\n"
              f"Bus Location: \t {bus_id(i)}\nDevice Minor: \t {i}\nGPU Excluded:\t No\n")
        # mig-minors lists every possible instance, whether it exists or not
        for gi in range(15):
            base = 3 + i * 200 + gi * 10
            mig_lines.append(f"gpu{i}/gi{gi}/access {base}")
            for ci in range(8):
                mig_lines.append(f"gpu{i}/gi{gi}/ci{ci}/access {base + 1 + ci}")
        if mig_per_gpu:
            for gi in range(1, mig_per_gpu + 1):
                base = 3 + i * 200 + gi * 10
                cap = f"/proc/driver/nvidia/capabilities/gpu{i}/mig/gi{gi}"
                write(root, f"{cap}/access", f"DeviceFileMinor: {base}\n")
                write(root, f"{cap}/ci0/access", f"DeviceFileMinor: {base + 1}\n")
                mknod(root, f"/dev/nvidia-caps/nvidia-cap{base}", CAPS_MAJOR, base, 0o444)
                mknod(root, f"/dev/nvidia-caps/nvidia-cap{base + 1}", CAPS_MAJOR, base + 1, 0o444)
        if mig and i == 0:
            for what, minor, mode in (("config", 1, 256), ("monitor", 2, 292)):
                write(root, f"/proc/driver/nvidia/capabilities/mig/{what}",
                      f"DeviceFileMinor: {minor}\nDeviceFileMode: {mode}\nDeviceFileModify: 1\n")
            for gi in (1, 2):
                base = 3 + gi * 10
                cap = f"/proc/driver/nvidia/capabilities/gpu0/mig/gi{gi}"
                write(root, f"{cap}/access", f"DeviceFileMinor: {base}\nDeviceFileMode: 292\n"
                      "DeviceFileModify: 1\n")
                write(root, f"{cap}/ci0/access", f"DeviceFileMinor: {base + 1}\n"
                      "DeviceFileMode: 292\nDeviceFileModify: 1\n")
                mknod(root, f"/dev/nvidia-caps/nvidia-cap{base}", CAPS_MAJOR, base, 0o444)
                mknod(root, f"/dev/nvidia-caps/nvidia-cap{base + 1}", CAPS_MAJOR, base + 1, 0o444)
    # --- /proc
    write(root, "/proc/driver/nvidia/version",
          f"NVRM version: NVIDIA UNIX x86_64 Kernel Module  {version}  Thu Feb 22 01:44:30 UTC 2024\n"
          "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")
    write(root, "/proc/driver/nvidia-caps/mig-minors", "\n".join(mig_lines) + "\n")
    write(root, "/proc/devices",
          "Character devices:\n  1 mem\n  4 tty\n  5 /dev/tty\n 10 misc\n136 pts\n"
          f"{NVIDIA_MAJOR} nvidia\n{NVIDIA_MAJOR} nvidia-modeset\n{DRM_MAJOR} drm\n"
          f"{CAPS_MAJOR} nvidia-caps\n{UVM_MAJOR} nvidia-uvm\n\n"
          "Block devices:\n  7 loop\n259 blkext\n")


def unix_socket(path: str) -> None:
    """A unix socket file bound at `path` (what a daemon's listening socket leaves)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.lexists(path):
        os.unlink(path)
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()


def _userspace(root, version, stale, full, mps, filler_libs) -> None:
    # --- libraries, built by gcc with the driver's sonames
    libdir = root + LIBDIR
    os.makedirs(libdir, exist_ok=True)
    define = f'-DDRIVER_VERSION="{version}"'
    for base, soname in (full_library_set() if full else LIBS).items():
        src = "libcuda.c" if base == "libcuda.so" else "libstub.c"
        out = f"{libdir}/{base}.{version}"
        gcc(["-shared", "-fPIC", define, f"-Wl,-soname,{soname or os.path.basename(out)}",
             "-o", out, f"{CSRC}/{src}"])
    if filler_libs:
        stub = f"{libdir}/libfiller0.so.1"
        gcc(["-shared", "-fPIC", "-Wl,-soname,libfiller.so.1", "-o", stub, f"{CSRC}/libstub.c"])
        for n in range(1, filler_libs):
            shutil.copy(stub, f"{libdir}/libfiller{n}.so.1")
    if stale:
        gcc(["-shared", "-fPIC", f'-DDRIVER_VERSION="{STALE_VERSION}"', "-Wl,-soname,libcuda.so.1",
             "-o", f"{libdir}/libcuda.so.{STALE_VERSION}", f"{CSRC}/libcuda.c"])
    write(root, "/etc/ld.so.conf", f"{LIBDIR}\n")
    # ldconfig -r makes the soname links and the cache, as a driver installer would.
    subprocess.run(["ldconfig", "-r", root], check=True)
    # --- binaries
    os.makedirs(root + "/usr/bin", exist_ok=True)
    for name in ("nvidia-smi", "nvidia-cuda-mps-control"):
        gcc([define, "-o", f"{root}/usr/bin/{name}", f"{CSRC}/nvidia-smi.c"])
    # --- DLSS for Proton: nvngx.dll beside the GL libraries, as the driver installs it
    for dll in ("nvngx.dll", "_nvngx.dll"):
        write(root, f"{LIBDIR}/nvidia/wine/{dll}", "simulated nvngx (PE file on a real host)\n")
    # --- firmware, graphics and OpenCL files, IPC socket
    for fw in ("gsp_ga10x.bin", "gsp_tu10x.bin"):
        write(root, f"/lib/firmware/nvidia/{version}/{fw}", "simulated GSP firmware\n")
    write(root, "/usr/share/vulkan/icd.d/nvidia_icd.json",
          '{"file_format_version": "1.0.0", "ICD": {"library_path": "libGLX_nvidia.so.0", '
          '"api_version": "1.3.277"}}\n')
    write(root, "/usr/share/glvnd/egl_vendor.d/10_nvidia.json",
          '{"file_format_version": "1.0.0", "ICD": {"library_path": "libEGL_nvidia.so.0"}}\n')
    write(root, "/etc/OpenCL/vendors/nvidia.icd", "libnvidia-opencl.so.1\n")
    unix_socket(root + "/run/nvidia-persistenced/socket")
    if mps:     # a CUDA MPS control daemon's pipe directory and log directory
        os.makedirs(root + "/tmp/nvidia-mps", exist_ok=True)
        os.makedirs(root + "/var/log/nvidia-mps", exist_ok=True)
        ctl = root + "/tmp/nvidia-mps/control"
        if os.path.lexists(ctl):
            os.unlink(ctl)
        c = socket.socket(socket.AF_UNIX)
        c.bind(ctl)
        c.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root")
    ap.add_argument("--gpus", type=int, default=2)
    ap.add_argument("--mig", action="store_true", help="two MIG instances on GPU 0")
    ap.add_argument("--driver", default="550.54.14")
    ap.add_argument("--stale", action="store_true", help=f"also leave libcuda.so.{STALE_VERSION}")
    ap.add_argument("--force", action="store_true", help="remove ROOT first")
    ap.add_argument("--full", action="store_true", help="every library nvbind knows, not a few")
    ap.add_argument("--mps", action="store_true", help="a running MPS control daemon's pipe dir")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("simhost: needs root (mknod)", file=sys.stderr)
        return 1
    if a.force and os.path.isdir(a.root):
        shutil.rmtree(a.root)
    build(a.root, a.gpus, a.mig, a.driver, a.stale, a.full, a.mps)
    print(os.path.abspath(a.root))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
