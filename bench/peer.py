"""Side-by-side rows for bench/run.py: nvbind against NVIDIA Container Toolkit on the same
simulated host, the same container, the same work, in the same interleaved rounds.

NVIDIA's binaries come from ../shared/peer/nvidia-container-toolkit/ (SOURCE.md there:
v1.20.0, built from source). When that directory is absent, `cases()` returns no NVIDIA
rows and a note saying so; nvbind's own rows (front end, plain runc) are still measured.

nvidia-container-runtime runs in CDI mode from its own config file ($XDG_CONFIG_HOME, no
/etc touched), with the spec `nvidia-ctk cdi generate --mode nvml` writes for the same
host. nvidia-ctk needs an NVML that answers: the bench host's libnvidia-ml.so is replaced by
tools/csrc/libnvml.c, built here with the host's UUIDs (nvbind's `--root` reads procfs and
never loads it).
"""
from __future__ import annotations

import glob
import json
import os
import select
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ../shared/peer beside the checkout (a worktree one level further down: ../../shared/peer)
PEER = next((p for p in (os.path.join(os.path.dirname(REPO), "shared", "peer", "nvidia-container-toolkit"),
                         os.path.join(os.path.dirname(os.path.dirname(REPO)), "shared", "peer",
                                      "nvidia-container-toolkit")) if os.path.isdir(p)),
            os.path.join(os.path.dirname(REPO), "shared", "peer", "nvidia-container-toolkit"))
FRONT = os.path.join(REPO, "dist", "nvbind-dir", "nvbind-runtime")
RUNC = shutil.which("runc") or "/usr/sbin/runc"
sys.path.insert(0, os.path.join(REPO, "tools"))
import engines  # noqa: E402
import simhost  # noqa: E402


class Timed:
    """A case that times itself (several processes, untimed preparation between)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, env):
        return self.fn(env)


def fake_nvml(root: str, gpus: int, version: str) -> None:
    uuids = "{" + ",".join(f'"{simhost.gpu_uuid(i)}"' for i in range(gpus)) + "}"
    subprocess.run(["gcc", "-O1", "-shared", "-fPIC", f"-DSIM_GPUS={gpus}", f"-DSIM_UUIDS={uuids}",
                    f'-DDRIVER_VERSION="{version}"', "-Wl,-soname,libnvidia-ml.so.1", "-o",
                    f"{root}/usr/lib64/libnvidia-ml.so.{version}",
                    os.path.join(REPO, "tools", "csrc", "libnvml.c")], check=True)


def ncr_config(d: str, root: str, specdir: str, runtime: str) -> str:
    os.makedirs(f"{d}/nvidia-container-runtime", exist_ok=True)
    with open(f"{d}/nvidia-container-runtime/config.toml", "w") as f:
        f.write(f'[nvidia-container-cli]\nroot = "{root}"\n\n'
                f'[nvidia-container-runtime]\nlog-level = "info"\ndebug = "{d}/runtime.log"\n'
                f'mode = "cdi"\nruntimes = ["{runtime}"]\n\n'
                '[nvidia-container-runtime.modes.cdi]\nannotation-prefixes = ["cdi.k8s.io/"]\n'
                f'default-kind = "nvidia.com/gpu"\nspec-dirs = ["{specdir}"]\n\n'
                f'[nvidia-ctk]\npath = "{PEER}/nvidia-ctk"\n')
    return d


def cases(tmp: str, root: str, image: str, env: dict, onedir: str, config):
    """([(name, argv|Timed, stdin, floor, target)], [rss probes], notes, extras);
    config(env list) -> config.json bytes (bench/run.py's)"""
    have_peer = os.path.isfile(os.path.join(PEER, "nvidia-container-runtime"))
    notes = [] if have_peer else [f"NVIDIA rows skipped: {PEER} is not there"]
    state = os.path.join(tmp, "runc-state")
    os.makedirs(state, exist_ok=True)
    counter = iter(range(10 ** 6))
    nvenv = dict(env, NVBIND_ROOT=root)      # the shim: host from the environment
    gpu_env = ["NVIDIA_VISIBLE_DEVICES=1"]

    def bundle(name, envs):
        b = engines.make_bundle(os.path.join(tmp, name), image, ["true"], envs)
        with open(f"{b}/config.json", "rb") as f:
            return b, f.read()

    def restore(b, text):
        with open(f"{b}/config.json", "wb") as f:
            f.write(text)

    def life(prefix, b, text, extra_env=None):
        """create, start, wait for the container's process to end, delete: ms"""
        import time
        e = dict(env, **(extra_env or {}))

        def go(_env):
            restore(b, text)
            cid = f"nvb-life-{next(counter)}"
            pidf = f"{tmp}/{cid}.pid"
            t0 = time.perf_counter()
            subprocess.run(prefix + ["--root", state, "create", "--bundle", b, "--pid-file", pidf, cid],
                           env=e, check=True, stdout=subprocess.DEVNULL)
            with open(pidf) as f:
                pfd = os.pidfd_open(int(f.read()))
            subprocess.run(prefix + ["--root", state, "start", cid], env=e, check=True)
            select.select([pfd], [], [], 30)
            os.close(pfd)
            subprocess.run(prefix + ["--root", state, "delete", cid], env=e, check=True)
            ms = (time.perf_counter() - t0) * 1000
            os.unlink(pidf)
            return ms
        return Timed(go)

    def shim_create(prefix, b, text, extra_env):
        import time
        e = dict(env, **extra_env)

        def go(_env):
            restore(b, text)
            t0 = time.perf_counter()
            subprocess.run(prefix + ["--root", state, "create", "--bundle", b, "x"], env=e, check=True,
                           stdout=subprocess.DEVNULL)
            return (time.perf_counter() - t0) * 1000
        return Timed(go)

    gpu_b, gpu_text = bundle("life-gpu", gpu_env)
    none_b, none_text = bundle("life-none", [])
    out, rss = [], []
    LIFE_RUNC = "life: plain runc (create,start,wait,delete)"
    LIFE_NCR = "life: nvidia-container-runtime CDI, GPU 1"
    out += [
        (LIFE_RUNC, life([RUNC], gpu_b, gpu_text), b"", None, None),
        ("life: nvbind-runtime, no request", life([FRONT], none_b, none_text, nvenv), b"", LIFE_RUNC, 1.1),
        ("life: nvbind-runtime, GPU 1", life([FRONT], gpu_b, gpu_text, nvenv), b"",
         LIFE_NCR if have_peer else LIFE_RUNC, 1.0 if have_peer else None),
    ]
    LIST_RUNC = "pass-through: runc list"
    out += [
        (LIST_RUNC, [RUNC, "--root", state, "list", "-q"], b"", None, None),
        ("pass-through: nvbind-runtime list", [FRONT, "--root", state, "list", "-q"], b"", LIST_RUNC, 1.1),
    ]
    TRUE = "/bin/true (the real runtime below)"
    true_env = dict(nvenv, NVBIND_RUNTIME="/bin/true")
    out += [(TRUE, ["/bin/true"], b"", None, None),
            ("shim delete, runtime /bin/true: nvbind-runtime",
             Timed(lambda _e: _run_ms([FRONT, "delete", "x"], true_env)), b"", TRUE, None)]
    # nvbind-runtime's createContainer hook and NVIDIA's two hooks, each doing the same links
    # and ld cache, run in a mount namespace where the rootfs is a mount (NVIDIA's
    # update-ldcache pivot_roots into it, as it does inside a container); the wrapper alone
    # is a row of its own
    cc_b, _ = bundle("cc", [])
    rootfs = f"{cc_b}/rootfs"
    os.makedirs(f"{rootfs}/usr/lib64", exist_ok=True)
    for lib in glob.glob(f"{root}/usr/lib64/*.so.*.*"):
        shutil.copy(lib, f"{rootfs}/usr/lib64/")
    statef = f"{tmp}/cc-state.json"
    with open(statef, "w") as f:
        json.dump({"ociVersion": "1.0.2", "id": "cc", "status": "creating", "pid": 1, "bundle": cc_b}, f)
    pre = subprocess.run([onedir, "--root", root, "--log", "off", "hook", "precreate"],
                         input=config(gpu_env), env=env, capture_output=True, check=True)
    (cc_hook,) = json.loads(pre.stdout)["hooks"]["createContainer"]
    cc_args = cc_hook["args"][cc_hook["args"].index("createContainer") + 1:]
    links = [a for i, a in enumerate(cc_args) if i and cc_args[i - 1] == "--link"]
    folders = [a for i, a in enumerate(cc_args) if i and cc_args[i - 1] == "--folder"]

    def cc_reset():
        for p in glob.glob(f"{rootfs}/usr/lib64/*"):
            if os.path.islink(p):
                os.unlink(p)
        for p in [f"{rootfs}/etc/ld.so.cache"] + glob.glob(f"{rootfs}/etc/ld.so.conf.d/zz-nvcr-*"):
            if os.path.exists(p):
                os.unlink(p)

    def in_ns(cmd):
        import shlex
        import time
        argv = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                f"mount --bind {shlex.quote(rootfs)} {shlex.quote(rootfs)} && {cmd}"]

        def go(_env):
            cc_reset()
            t0 = time.perf_counter()
            subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return (time.perf_counter() - t0) * 1000
        return Timed(go)

    import shlex
    nv_cc = " ".join(shlex.quote(a) for a in [cc_hook["path"], *cc_hook["args"][1:]])
    CC_WRAP = "createContainer: the namespace wrapper alone"
    CC_NV = "createContainer: nvidia-cdi-hook create-symlinks + update-ldcache"
    out += [(CC_WRAP, in_ns("true"), b"", None, None),
            ("createContainer: nvbind hook (links + ld cache)", in_ns(f"{nv_cc} <{statef}"), b"",
             CC_NV if have_peer else None, 1.0 if have_peer else None)]
    rss.append(("createContainer hook", "nvbind", in_ns_rss(rootfs, [cc_hook["path"], *cc_hook["args"][1:]], statef)))
    extras = {"cc": (CC_WRAP, "createContainer: nvbind hook (links + ld cache)", CC_NV)}
    GEN_NV = "cdi generate: nvidia-ctk --mode nvml"
    gen_nvbind = [onedir, "--root", root, "--log", "off", "cdi", "generate", "--output", f"{tmp}/nvbind-spec.json"]
    out.append(("cdi generate: nvbind", Timed(lambda _e: _run_ms(gen_nvbind, env)), b"", GEN_NV if have_peer else None,
                1.0 if have_peer else None))
    rss.append(("cdi generate", "nvbind", gen_nvbind))
    shim_gpu = [FRONT, "--root", state, "create", "--bundle", gpu_b, "x"]
    rss.append(("shim create, GPU 1 (runtime /bin/true)", "nvbind",
                (shim_gpu, true_env, lambda: restore(gpu_b, gpu_text))))
    rss.append(("shim pass-through verb (runtime /bin/true)", "nvbind", ([FRONT, "delete", "x"], true_env, None)))
    out += [("shim create, GPU 1, runtime /bin/true: nvbind-runtime", shim_create([FRONT], gpu_b, gpu_text, true_env),
             b"", "shim create, GPU 1, runtime /bin/true: nvidia-container-runtime" if have_peer else None,
             None),
            ("shim create, no request, runtime /bin/true: nvbind-runtime",
             shim_create([FRONT], none_b, none_text, true_env), b"", TRUE, None)]
    if not have_peer:
        return out, rss, notes, extras
    # --- NVIDIA
    fake_nvml(root, 8, "550.54.14")
    specdir = f"{tmp}/nvidia-cdi"
    os.makedirs(specdir, exist_ok=True)
    ctk = [f"{PEER}/nvidia-ctk", "cdi", "generate", "--mode", "nvml", "--driver-root", root, "--dev-root", root,
           "--nvidia-cdi-hook-path", f"{PEER}/nvidia-cdi-hook"]
    subprocess.run(ctk + ["--output", f"{specdir}/nvidia.json"], env=env, check=True, capture_output=True)
    ncr = f"{PEER}/nvidia-container-runtime"
    xdg = {"XDG_CONFIG_HOME": ncr_config(f"{tmp}/ncr-runc", root, specdir, RUNC)}
    xdg_true = {"XDG_CONFIG_HOME": ncr_config(f"{tmp}/ncr-true", root, specdir, "/bin/true")}
    out += [
        (LIFE_NCR, life([ncr], gpu_b, gpu_text, xdg), b"", LIFE_RUNC, None),
        ("life: nvidia-container-runtime CDI, no request", life([ncr], none_b, none_text, xdg), b"", LIFE_RUNC, None),
        ("pass-through: nvidia-container-runtime list", [ncr, "--root", state, "list", "-q"], b"", LIST_RUNC, None),
        ("shim delete, runtime /bin/true: nvidia-container-runtime", Timed(
            lambda _e: _run_ms([ncr, "delete", "x"], dict(env, **xdg_true))), b"", TRUE, None),
        ("shim create, GPU 1, runtime /bin/true: nvidia-container-runtime",
         shim_create([ncr], gpu_b, gpu_text, xdg_true), b"", TRUE, None),
        ("shim create, no request, runtime /bin/true: nvidia-container-runtime",
         shim_create([ncr], none_b, none_text, xdg_true), b"", TRUE, None),
    ]
    hook = f"{PEER}/nvidia-cdi-hook"
    link_args = " ".join(f"--link {shlex.quote(x)}" for x in links)
    folder_args = " ".join(f"--folder {shlex.quote(x)}" for x in folders)
    out.append((CC_NV, in_ns(f"{hook} create-symlinks {link_args} <{statef} && "
                             f"{hook} update-ldcache {folder_args} <{statef}"), b"", None, None))
    rss.append(("createContainer hook", "NVIDIA", in_ns_rss(rootfs, [hook, "update-ldcache", *sum(
        (["--folder", x] for x in folders), [])], statef)))
    rss.append(("createContainer hook", "NVIDIA", in_ns_rss(rootfs, [hook, "create-symlinks", *sum(
        (["--link", x] for x in links), [])], statef)))
    gen_ctk = ctk + ["--output", f"{tmp}/nvidia-spec.json"]
    out.append((GEN_NV, Timed(lambda _e: _run_ms(gen_ctk, env)), b"", None, None))
    rss.append(("cdi generate", "NVIDIA", gen_ctk))
    rss.append(("shim create, GPU 1 (runtime /bin/true)", "NVIDIA",
                ([ncr, "--root", state, "create", "--bundle", gpu_b, "x"], dict(env, **xdg_true),
                 lambda: restore(gpu_b, gpu_text))))
    rss.append(("shim pass-through verb (runtime /bin/true)", "NVIDIA",
                ([ncr, "delete", "x"], dict(env, **xdg_true), None)))
    return out, rss, notes, extras


def _run_ms(argv, env):
    import time
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - t0) * 1000


def in_ns_rss(rootfs, argv, statef):
    """A probe: argv run (with the state on stdin) in the namespace wrapper; GNU time inside
    it measures the hook process alone."""
    import shlex
    cmd = " ".join(shlex.quote(a) for a in argv)
    return (["unshare", "-m", "--propagation", "private", "sh", "-c",
             f"mount --bind {shlex.quote(rootfs)} {shlex.quote(rootfs)} && "
             f"/usr/bin/time -f %M {cmd} <{shlex.quote(statef)}"], None, None)


def peak_rss(probe, env) -> float:
    """MiB: the largest max-RSS of 3 runs (GNU time's %M, the last line of stderr)."""
    argv, penv, prep = probe if isinstance(probe, tuple) else (probe, None, None)
    if argv[0] != "unshare":
        argv = ["/usr/bin/time", "-f", "%M"] + argv
    worst = 0.0
    for _ in range(3):
        if prep:
            prep()
        r = subprocess.run(argv, env=penv or env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
        worst = max(worst, int(r.stderr.split()[-1]) / 1024)
    return worst
