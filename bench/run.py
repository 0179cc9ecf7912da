#!/usr/bin/env python3
"""Hook latency, in one run: medians of interleaved rounds, as ratios to a floor.

    bench/run.py [--rounds N] [--json FILE]

The floor is the project's interpreter starting with nothing to do (`python -c pass`
from the virtualenv the hook runs from). Each round runs every case once, in turn, so
that a busy moment of the machine hits all cases alike. Needs root (the simulated
8-GPU host is made with mknod).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
import engines  # noqa: E402
import simhost  # noqa: E402
import testimage  # noqa: E402


def config(env=()):
    return json.dumps({
        "ociVersion": "1.0.2-dev",
        "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": ["sh"], "cwd": "/",
                    "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                            "TERM=xterm", *env]},
        "root": {"path": "rootfs"}, "hostname": "bench",
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"resources": {"devices": [{"allow": False, "access": "rwm"}]},
                  "namespaces": [{"type": "pid"}, {"type": "mount"}]},
    }).encode()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=41)
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    py = sys.executable
    nvbind = os.path.join(os.path.dirname(py), "nvbind")
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "host")
        simhost.build(root, gpus=8, mig=False, version="550.54.14", stale=False, full=True)
        hook = [nvbind, "--root", root, "hook", "precreate"]
        image = testimage.build(os.path.join(tmp, "image"))
        plain = engines.make_bundle(os.path.join(tmp, "plain"), image, ["true"],
                                    ["NVIDIA_VISIBLE_DEVICES=1"])
        live = engines.make_bundle(
            os.path.join(tmp, "live"), image, ["true"], ["NVIDIA_VISIBLE_DEVICES=1"],
            {"createRuntime": [engines.nvbind_hook("createRuntime", root, os.devnull)]})
        runs = iter(range(10 ** 6))
        onefile = os.path.join(REPO, "dist", "nvbind")
        onedir = os.path.join(REPO, "dist", "nvbind-dir", "nvbind")

        def runc(bundle):
            return ["sh", "-c", f"cd {bundle} && runc run -d nvb-bench-{next(runs)} >/dev/null "
                    f"&& runc delete -f nvb-bench-{next(runs) - 1}"]
        cases = [  # name, argv, stdin, floor, target ratio
            ("floor: python -c pass", [py, "-c", "pass"], b"", None, None),
            ("precreate, no GPU request", hook, config(), "floor: python -c pass", 1.3),
            ("precreate, NVIDIA_VISIBLE_DEVICES=1, 8-GPU host", hook,
             config(["NVIDIA_VISIBLE_DEVICES=1"]), "floor: python -c pass", 2.0),
            ("precreate, NVIDIA_VISIBLE_DEVICES=all, caps all", hook,
             config(["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_DRIVER_CAPABILITIES=all"]),
             "floor: python -c pass", None),
            ("runc run (create, start, delete), no hook", lambda: runc(plain), b"", None, None),
        ]
        if os.path.exists(onefile) and os.path.exists(onedir):
            gpu = config(["NVIDIA_VISIBLE_DEVICES=1"])
            cases += [
                ("frozen one-dir --version", [onedir, "--version"], b"", None, None),
                ("frozen one-dir precreate, no request", [onedir, "--root", root, "hook", "precreate"],
                 config(), "frozen one-dir --version", None),
                ("frozen one-dir precreate, GPU 1", [onedir, "--root", root, "hook", "precreate"],
                 gpu, "frozen one-dir --version", None),
                ("frozen one-file precreate, GPU 1", [onefile, "--root", root, "hook", "precreate"],
                 gpu, "frozen one-dir --version", None),
            ]
        cases += [
            ("runc run + createRuntime hook, GPU 1, all libs", lambda: runc(live), b"",
             "runc run (create, start, delete), no hook", None),
        ]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        times: dict[str, list[float]] = {c[0]: [] for c in cases}
        def once(argv, stdin):
            argv = argv() if callable(argv) else argv
            t0 = time.perf_counter()
            subprocess.run(argv, input=stdin, stdout=subprocess.DEVNULL, env=env, check=True)
            return (time.perf_counter() - t0) * 1000
        for name, argv, stdin, _, _ in cases:  # warm-up (page cache, .pyc files)
            once(argv, stdin)
        for _ in range(a.rounds):
            for name, argv, stdin, _, _ in cases:
                times[name].append(once(argv, stdin))
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = []
    print(f"{'case':<50} {'median':>8} {'min':>7} {'max':>7}  {'ratio':>6} {'target':>7}  ok")
    for name, _, _, floor, target in cases:
        ratio = med[name] / med[floor] if floor else None
        ok = None if target is None else ratio <= target
        rows.append({"case": name, "median_ms": round(med[name], 2),
                     "min_ms": round(min(times[name]), 2), "max_ms": round(max(times[name]), 2),
                     "floor": floor, "ratio": ratio and round(ratio, 2), "target": target, "ok": ok})
        print(f"{name:<50} {med[name]:8.1f} {min(times[name]):7.1f} {max(times[name]):7.1f}  "
              f"{'' if ratio is None else f'{ratio:.2f}x':>6} "
              f"{'' if target is None else f'<={target}x':>7}  {'' if ok is None else ('yes' if ok else 'NO')}")
    added = med["runc run + createRuntime hook, GPU 1, all libs"] - med["runc run (create, start, delete), no hook"]
    print(f"createRuntime adds {added:.1f} ms to runc run (target <= 200 ms: {'yes' if added <= 200 else 'NO'})")
    rows.append({"case": "createRuntime added to runc run", "median_ms": round(added, 2),
                 "target": 200, "ok": added <= 200})
    print(f"({a.rounds} interleaved rounds, times in ms, {os.cpu_count()} CPUs, {sys.version.split()[0]})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
