#!/usr/bin/env python3
"""The main job: a real podman container gets a simulated GPU through nvbind.

Builds (once) a simulated 2-GPU host under --state, a small glibc image, and a hooks.d
directory that registers nvbind as podman's precreate hook; then runs a container that
asks for GPU 1 the way CUDA images do (NVIDIA_VISIBLE_DEVICES=1) and shows what it got.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import engines  # noqa: E402

SCRIPT = ("echo '--- device nodes in the container:'; ls -l /dev/nvidia*; "
          "echo '--- open each node, then dlopen(libcuda.so.1):'; "
          "gpucheck /dev/nvidia1 /dev/nvidia0 /dev/nvidiactl /dev/nvidia-uvm; rc=$?; "
          "echo '--- environment set by nvbind:'; env | grep ^NVBIND_ | sort; "
          "echo '--- nvidia-smi (the host binary, bind-mounted read-only):'; "
          "nvidia-smi 2>&1 || echo '(needs a glibc that matches; see README)'; exit $rc")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--state", default=".sim")
    ap.add_argument("--devices", default="1", help="NVIDIA_VISIBLE_DEVICES for the container")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("demo: run as root (podman as root, mknod for the simulated host)", file=sys.stderr)
        return 1
    root, pm = engines.prepare(a.state)
    print(f"simulated host: {root}\nhooks dir:      {pm.hooks_dir}\n"
          f"container:      podman run -e NVIDIA_VISIBLE_DEVICES={a.devices} {engines.IMAGE}\n")
    r = pm.run(["/bin/sh", "-c", SCRIPT], env={"NVIDIA_VISIBLE_DEVICES": a.devices})
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    print(f"\ncontainer exit status: {r.returncode}")
    return r.returncode


if __name__ == "__main__":
    raise SystemExit(main())
