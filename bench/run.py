#!/usr/bin/env python3
"""nvbind's latency and memory, in one run: medians of interleaved rounds, as ratios to floors.

    bench/run.py [--rounds N] [--json FILE]      (make bench; needs root and `make dist`)

Floors, measured in the same run:
  F_venv    the project's virtualenv python starting with nothing to do (`python -c pass`)
  F_py      `python3 -I -S -c pass`
  F_frozen  an empty program frozen and started exactly as nvbind is (one-dir, nvbind's
            PyInstaller options, the same launcher; packaging/floor.spec)
  F_pyi     the same empty program through PyInstaller's one-dir bootloader, which the
            tree's launcher replaced (what F_frozen was until then; information only)
Each round runs every case once, in turn, so that a busy moment hits all cases alike.
The hooks run as the shipped hooks.d files run them: environment PATH and NVBIND_LOG only.
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
import peer  # noqa: E402
import realhost  # noqa: E402
import simhost  # noqa: E402
import testimage  # noqa: E402

ONEFILE = os.path.join(REPO, "dist", "nvbind")
ONEDIR = os.path.join(REPO, "dist", "nvbind-dir", "nvbind")
FLOOR = os.path.join(REPO, "build", "floor-dist", "floor", "floor")
FLOOR_PYI = os.path.join(REPO, "build", "floor-dist", "floor", "floor-pyi")


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


def ensure_builds():
    if not (os.path.exists(ONEFILE) and os.path.exists(ONEDIR)):
        raise SystemExit("bench: dist/ missing, run `make dist` (make bench does)")
    inputs = [os.path.join(REPO, "packaging", f) for f in
              ("floor.spec", "floor_entry.py", "pyi_options.py", "frontend/nvbind.c",
               "frontend/nvbind_sys.c")]
    if not os.path.exists(FLOOR_PYI) or os.path.getmtime(FLOOR) < max(map(os.path.getmtime, inputs)):
        subprocess.run([os.path.join(os.path.dirname(sys.executable), "pyinstaller"), "--noconfirm",
                        "--log-level", "WARN", "--distpath", "build/floor-dist", "--workpath",
                        "build/floor-work", "packaging/floor.spec"], cwd=REPO, check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=31)
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    ensure_builds()
    py = sys.executable
    src = os.path.join(os.path.dirname(py), "nvbind")
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "host")
        simhost.build(root, gpus=8, mig=False, version="550.54.14", stale=False, full=True)
        big = os.path.join(tmp, "big")
        simhost.build(big, gpus=8, mig=False, version="550.54.14", stale=False, full=True,
                      mig_per_gpu=7, filler_libs=155)
        nlibs = len(os.listdir(big + "/usr/lib64"))
        # real driver files: Debian's NVIDIA 535 packages and the .run layout made from them
        # (tools/realhost.py, cached under .cache/realhost; `make bench` builds them)
        real = realhost.build_all()
        # no configuration file of the bench's own: the targets are defined with the defaults
        # (a file costs every hook a load); /etc/nvbind/config.toml is read if a machine has one
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "NVBIND_LOG": os.path.join(tmp, "nvbind.log"),
               "NVBIND_CACHE_DIR": os.path.join(tmp, "cache")}
        image = testimage.build(os.path.join(tmp, "image"))
        plain = engines.make_bundle(os.path.join(tmp, "plain"), image, ["true"], ["NVIDIA_VISIBLE_DEVICES=1"])
        live = engines.make_bundle(os.path.join(tmp, "live"), image, ["true"], ["NVIDIA_VISIBLE_DEVICES=1"],
                                   {"createRuntime": [engines.nvbind_hook("createRuntime", root,
                                                                          env["NVBIND_LOG"], exe=ONEDIR)]})
        runs = iter(range(10 ** 6))

        def runc(bundle):
            n = next(runs)
            return ["sh", "-c", f"cd {bundle} && runc run -d nvb-bench-{n} >/dev/null "
                    f"&& runc delete -f nvb-bench-{n}"]

        def hook(exe, r=root):
            return [exe, "--root", r, "hook", "precreate"]

        def fifty(argv, stdin):
            return ["sh", "-c", f"for i in $(seq 50); do {' '.join(argv)} <{stdin} >/dev/null & done; wait"]

        gpu, none, allc = config(["NVIDIA_VISIBLE_DEVICES=1"]), config(), \
            config(["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_DRIVER_CAPABILITIES=all"])
        gpu_file = os.path.join(tmp, "gpu.json")
        with open(gpu_file, "wb") as f:
            f.write(gpu)
        mig_cfg = config(["NVIDIA_VISIBLE_DEVICES=" + ",".join(f"{g}:{m}" for g in range(8) for m in range(7))])
        F_VENV, F_PY, F_FROZEN = "F_venv: venv python -c pass", "F_py: python3 -I -S -c pass", \
            "F_frozen: empty frozen program"
        RUNC = "runc run, plain container"
        cases = [  # name, argv (or callable), stdin, floor, target ratio
            (F_VENV, [py, "-c", "pass"], b"", None, None),
            (F_PY, ["python3", "-I", "-S", "-c", "pass"], b"", None, None),
            (F_FROZEN, [FLOOR], b"", None, None),
            ("F_pyi: the same, through PyInstaller's bootloader", [FLOOR_PYI], b"", F_FROZEN, None),
            ("source precreate, no GPU request", hook(src), none, F_VENV, 1.3),
            ("source precreate, GPU 1 of 8", hook(src), gpu, F_VENV, 2.0),
            ("frozen precreate, no GPU request", hook(ONEDIR), none, F_FROZEN, 1.15),
            ("frozen precreate, GPU 1 of 8", hook(ONEDIR), gpu, F_FROZEN, 1.5),
            ("frozen precreate, GPU 1 of 8 (vs F_py, stretch)", hook(ONEDIR), gpu, F_PY, 3.0),
            ("frozen precreate, all GPUs, all capabilities", hook(ONEDIR), allc, F_FROZEN, None),
            ("frozen precreate, 8 GPUs x 7 MIG, 200 libs", hook(ONEDIR, big), mig_cfg, F_FROZEN, None),
            ("frozen precreate, GPU 1, Debian's 535 packages", hook(ONEDIR, real["debian"]), gpu,
             F_FROZEN, 1.5),
            ("frozen precreate, GPU 1, the .run layout", hook(ONEDIR, real["runfile"]), gpu,
             F_FROZEN, 1.5),
            ("frozen precreate, all GPUs and capabilities, Debian's packages",
             hook(ONEDIR, real["debian"]), allc, F_FROZEN, None),
            ("one-file precreate, GPU 1 (unpacks per call)", hook(ONEFILE), gpu, F_FROZEN, None),
            ("50 concurrent frozen floors", fifty([FLOOR], "/dev/null"), b"", None, None),
            ("50 concurrent frozen precreates, GPU 1", fifty(hook(ONEDIR), gpu_file), b"",
             "50 concurrent frozen floors", None),
            (RUNC, lambda: runc(plain), b"", None, None),
            ("runc run + frozen createRuntime, GPU 1, all libs", lambda: runc(live), b"", RUNC, 2.5),
        ]

        side, probes, notes, extra_keys = peer.cases(tmp, root, image, env, ONEDIR, config)
        cases += side

        def once(argv, stdin):
            if isinstance(argv, peer.Timed):
                return argv(env)
            argv = argv() if callable(argv) else argv
            t0 = time.perf_counter()
            subprocess.run(argv, input=stdin, stdout=subprocess.DEVNULL, env=env, check=True)
            return (time.perf_counter() - t0) * 1000

        times: dict[str, list[float]] = {c[0]: [] for c in cases}
        for name, argv, stdin, _, _ in cases:       # warm-up: page cache, .pyc, inventory cache
            once(argv, stdin)
        for _ in range(a.rounds):
            for name, argv, stdin, _, _ in cases:
                times[name].append(once(argv, stdin))
        # peak memory of one hook invocation (max RSS of the process)
        rss = []
        for _ in range(5):     # GNU time: the hook's own peak, not this process's pages
            r = subprocess.run(["/usr/bin/time", "-f", "%M"] + hook(ONEDIR), input=gpu, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
            rss.append(int(r.stderr.split()[-1]) / 1024)
        rss_mib = max(rss)
        peak: dict[tuple[str, str], float] = {}    # (door, who) -> the door's largest process
        for door, who, probe in probes:
            peak[door, who] = max(peak.get((door, who), 0.0), peer.peak_rss(probe, env))
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = []
    print(f"{'case':<66} {'median':>7} {'min':>7} {'max':>7}  {'floor':<24} {'ratio':>6} {'target':>7}  ok")
    for name, _, _, floor, target in cases:
        ratio = med[name] / med[floor] if floor else None
        ok = None if target is None else ratio <= target
        fl = (floor.split(":")[0] if floor.startswith("F_") else floor[:24]) if floor else ""
        rows.append({"case": name, "median_ms": round(med[name], 1), "min_ms": round(min(times[name]), 1),
                     "max_ms": round(max(times[name]), 1), "floor": floor,
                     "ratio": None if ratio is None else round(ratio, 2), "target": target, "ok": ok})
        print(f"{name:<66} {med[name]:7.1f} {min(times[name]):7.1f} {max(times[name]):7.1f}  {fl:<24} "
              f"{'' if ratio is None else f'{ratio:.2f}x':>6} {'' if target is None else f'<={target}x':>7}  "
              f"{'' if ok is None else ('yes' if ok else 'NO')}")
    added = med["runc run + frozen createRuntime, GPU 1, all libs"] - med[RUNC]
    size = os.path.getsize(ONEFILE) / (1 << 20)
    extra = [("createRuntime adds to runc run (ms)", added, f"<= 1.5x runc run = {1.5 * med[RUNC]:.0f}",
              added <= 1.5 * med[RUNC]),
             ("peak RSS of one frozen hook run (MiB)", rss_mib, "<= 30", rss_mib <= 30),
             ("dist/nvbind size (MiB)", size, "<= 20", size <= 20)]
    wrap, mine, theirs = extra_keys["cc"]
    if theirs in med:
        net = (med[mine] - med[wrap]) / (med[theirs] - med[wrap])
        extra.append(("createContainer work net of the wrapper (ratio)", net, "<= 1.0 NVIDIA's", net <= 1.0))
    for door in dict.fromkeys(d for d, _ in peak):
        mine_mib, theirs_mib = peak[door, "nvbind"], peak.get((door, "NVIDIA"))
        extra.append((f"peak RSS (MiB), {door}", mine_mib,
                      "" if theirs_mib is None else f"<= NVIDIA's {theirs_mib:.1f}",
                      None if theirs_mib is None else mine_mib <= theirs_mib))
    for name, value, target, ok in extra:
        print(f"{name:<66} {value:7.1f}  {target:>30}  {'' if ok is None else ('yes' if ok else 'NO')}")
        rows.append({"case": name, "value": round(value, 1), "target": target, "ok": ok})
    for note in notes:
        print(f"note: {note}")
    print(f"({a.rounds} interleaved rounds, times in ms; {os.cpu_count()} CPUs; Python "
          f"{sys.version.split()[0]}; big host: {nlibs} files in its library directory)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
