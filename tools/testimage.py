#!/usr/bin/env python3
"""A small glibc rootfs for GPU tests: busybox, the host's glibc, and `gpucheck`.

    tools/testimage.py DIR

`gpucheck PATH...` opens each device node and prints OK / ENXIO / EPERM / ENOENT, then
dlopen()s libcuda.so.1 by soname and calls cuInit and cuDriverGetVersion. The image has no
/usr/lib64 in its library path, so the driver is found only through the ld cache that
nvbind's createContainer hook rebuilds.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
APPLETS = ("sh", "ls", "cat", "echo", "env", "test", "stat", "readlink", "grep", "head", "id",
           "mount", "sleep", "true", "false", "printf", "find", "wc")


def _copy_lib(rootfs: str, path: str) -> None:
    real = os.path.realpath(path)
    dest = rootfs + os.path.dirname(path)
    os.makedirs(dest, exist_ok=True)
    shutil.copy2(real, os.path.join(dest, os.path.basename(path)), follow_symlinks=True)


def build(rootfs: str) -> str:
    rootfs = os.path.abspath(rootfs)
    if os.path.exists(rootfs):
        shutil.rmtree(rootfs)
    for d in ("bin", "dev", "proc", "sys", "tmp", "etc/ld.so.conf.d", "usr/local/bin",
              "lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "root"):
        os.makedirs(os.path.join(rootfs, d), exist_ok=True)
    busybox = shutil.which("busybox") or "/bin/busybox"
    shutil.copy2(busybox, f"{rootfs}/bin/busybox")
    for a in APPLETS:
        os.symlink("busybox", f"{rootfs}/bin/{a}")
    subprocess.run(["gcc", "-O1", "-o", f"{rootfs}/usr/local/bin/gpucheck",
                    f"{HERE}/csrc/gpucheck.c"], check=True)
    for lib in ("/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"):
        _copy_lib(rootfs, lib)
    with open(f"{rootfs}/etc/ld.so.conf", "w") as f:
        f.write("include /etc/ld.so.conf.d/*.conf\n")
    with open(f"{rootfs}/etc/ld.so.conf.d/x86_64-linux-gnu.conf", "w") as f:
        f.write("/usr/local/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n")
    with open(f"{rootfs}/etc/passwd", "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    subprocess.run(["ldconfig", "-r", rootfs], check=True)
    return rootfs


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else "rootfs"))
