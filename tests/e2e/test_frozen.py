"""The frozen executable (make dist): one file that needs no Python on the host.

dist/nvbind is the file users copy; `nvbind install` unpacks its one-dir tree once, and
that tree is what the engines run, entered through its own launcher
(packaging/frontend/nvbind.c) rather than PyInstaller's bootloader. Both are driven
through real engines here.
"""
import json
import os
import re
import subprocess

import pytest

from conftest import REPO, base_config

# make debian-python runs these tests against the build from Debian's own Python as well
ONEFILE = os.environ.get("NVBIND_TEST_ONEFILE") or os.path.join(REPO, "dist", "nvbind")


@pytest.fixture(scope="session")
def onefile():
    if not os.path.exists(ONEFILE):
        pytest.skip("dist/nvbind not built (make test builds it with `make dist`)")
    return ONEFILE


@pytest.fixture(scope="session")
def installed(onefile, tmp_path_factory):
    """`dist/nvbind install` into a prefix; returns the unpacked one-dir executable."""
    dest = tmp_path_factory.mktemp("prefix")
    r = subprocess.run([onefile, "install", "--engine", "podman", "--dest", str(dest)],
                       capture_output=True, text=True, env={})
    assert r.returncode == 0, r.stderr
    exe = os.readlink(dest / "usr/local/bin/nvbind")
    assert exe.startswith("/usr/local/lib/nvbind/nvbind-")
    return str(dest) + exe


def test_runs_with_empty_environment_from_empty_dir(onefile, installed, sim_root, tmp_path):
    for exe in (onefile, installed):
        r = subprocess.run(["env", "-i", exe, "--version"], capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.startswith("nvbind "), r.stderr
        cfg = json.dumps(base_config(env=["NVIDIA_VISIBLE_DEVICES=1"]))
        r = subprocess.run([exe, "--root", sim_root, "hook", "precreate"], input=cfg,
                           capture_output=True, text=True, env={}, cwd=str(tmp_path))
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert "/dev/nvidia1" in [d["path"] for d in out["linux"]["devices"]]
        assert out["hooks"]["createContainer"][0]["path"] == exe


def test_loads_nothing_from_the_host_python(installed, sim_root):
    """PYTHONPATH/PYTHONHOME and friends must not reach the frozen interpreter."""
    env = {"PYTHONPATH": "/nonexistent-evil", "PYTHONHOME": "/nonexistent-evil",
           "PYTHONSTARTUP": "/nonexistent-evil/x.py", "PYTHONINSPECT": "1"}
    r = subprocess.run(["strace", "-f", "-e", "trace=openat,execve", "-o", "/dev/stdout", installed,
                        "--root", sim_root, "info", "--json"], capture_output=True, text=True, env=env)
    if r.returncode == 127 or "strace" in r.stderr and "not found" in r.stderr:
        pytest.skip("strace not installed")
    opened = [line for line in r.stdout.splitlines() if "openat(" in line and "ENOENT" not in line]
    assert not [o for o in opened if "/usr/lib/python3" in o or "site-packages" in o
                or "nonexistent-evil" in o], opened[:5]


def test_planted_python_files_never_run(installed, sim_root, tmp_path):
    """The launcher starts Python isolated: no PYTHON* variable, user site, startup file or
    working directory can put code into the hook. Each planted file would leave a mark."""
    evil = tmp_path / "evil"
    (evil / "nvbind").mkdir(parents=True)
    mark = tmp_path / "ran"
    code = f"open({str(mark)!r}, 'a').write(__name__ + '\\n')\n"
    for f in ("sitecustomize.py", "usercustomize.py", "startup.py", "nvbind/__init__.py",
              "lib/python3.11/encodings/__init__.py"):
        (evil / f).parent.mkdir(parents=True, exist_ok=True)
        (evil / f).write_text(code)
    home = tmp_path / "home"
    (home / ".local/lib/python3.11/site-packages").mkdir(parents=True)
    (home / ".local/lib/python3.11/site-packages/usercustomize.py").write_text(code)
    env = {"PYTHONPATH": str(evil), "PYTHONSTARTUP": str(evil / "startup.py"),
           "PYTHONINSPECT": "1", "PYTHONUSERBASE": str(home / ".local"), "HOME": str(home),
           "PYTHONWARNINGS": "error", "PYTHONVERBOSE": "1", "PATH": "/usr/bin:/bin"}
    cfg = json.dumps(base_config(env=["NVIDIA_VISIBLE_DEVICES=1"]))
    for argv, stdin in (([installed, "--version"], None),
                        ([installed, "--root", sim_root, "hook", "precreate"], cfg)):
        r = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                           env={**env, "PYTHONHOME": str(evil)},
                           cwd=str(evil), timeout=60)
        assert r.returncode == 0, r.stderr
        assert "import " not in r.stderr, r.stderr[:500]       # PYTHONVERBOSE not taken
    assert not mark.exists(), mark.read_text()
    # and the planted files are real: a plain interpreter with this environment runs them
    r = subprocess.run(["python3", "-c", "import nvbind"], env=env, cwd=str(evil),
                       capture_output=True, text=True, timeout=60)
    assert mark.exists()


def test_launcher_carries_the_interpreter_and_nvbind(installed, sim_root, tmp_path):
    """The launcher is linked with the interpreter (a position-dependent executable: the
    tree carries no libpython to relocate at every start) and carries nvbind's modules
    frozen, their code read from _internal/nvbind.frozen: a hook run opens no .pyc file of
    nvbind's, and a data file that is not the one the launcher was built with is refused
    with one clean line."""
    import shutil
    tree = os.path.dirname(installed)
    internal = os.path.join(tree, "_internal")
    assert not [n for n in os.listdir(internal) if n.startswith("libpython")]
    with open(installed, "rb") as f:
        assert int.from_bytes(f.read(18)[16:], "little") == 2          # ET_EXEC
    assert not [f for _, _, fs in os.walk(os.path.join(internal, "nvbind")) for f in fs
                if f.endswith(".pyc")]
    cfg = json.dumps(base_config(env=["NVIDIA_VISIBLE_DEVICES=1"]))
    r = subprocess.run(["strace", "-f", "-e", "trace=openat,open", "-o", str(tmp_path / "trace"),
                        installed, "--root", sim_root, "hook", "precreate"], input=cfg,
                       capture_output=True, text=True, env={"NVBIND_LOG": "off"})
    if r.returncode == 127 or not (tmp_path / "trace").exists():
        pytest.skip("strace not installed")
    assert r.returncode == 0 and "/dev/nvidia1" in r.stdout, r.stderr
    opened = (tmp_path / "trace").read_text()
    assert os.path.join(internal, "nvbind.frozen") in opened
    assert not re.findall(re.escape(os.path.join(internal, "nvbind")) + r"/[^\"]*\.pyc", opened), opened
    # the data file of another build (a byte changed): refused, nothing runs
    copy = tmp_path / "tree"
    shutil.copytree(tree, copy, symlinks=True)
    data = copy / "_internal" / "nvbind.frozen"
    raw = bytearray(data.read_bytes())
    raw[0] ^= 1
    data.write_bytes(bytes(raw))
    r = subprocess.run([str(copy / "nvbind"), "--version"], capture_output=True, text=True, env={})
    assert r.returncode != 0 and "nvbind " not in r.stdout
    assert r.stderr.startswith("nvbind: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "not the file this launcher was built with" in r.stderr, r.stderr
    # this build's file with something other than code where a module's code is
    raw[0] ^= 1
    raw[16:17] = b"N"           # marshal's None, where the nvbind package's code starts
    data.write_bytes(bytes(raw))
    r = subprocess.run([str(copy / "nvbind"), "--version"], capture_output=True, text=True, env={})
    assert r.returncode != 0 and "not a code object" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    # started with stdin and stdout closed, its descriptor is not 0 or 1 (which a forked
    # child's stdio setup replaces with /dev/null)
    r = subprocess.run(["strace", "-f", "-e", "trace=openat,fcntl", "-o", str(tmp_path / "fds"),
                        "/bin/sh", "-c", f"exec {installed} --root {sim_root} info --json <&- >&-"],
                       capture_output=True, text=True, env={"NVBIND_LOG": "off"})
    assert r.returncode == 0 and r.stderr == "", r.stderr
    calls = (tmp_path / "fds").read_text()
    fd = int(re.search(r'nvbind\.frozen", .* = (\d+)', calls).group(1))
    assert fd == 0, calls       # the lowest free one: stdin's
    moved = re.search(rf"fcntl\({fd}, F_DUPFD_CLOEXEC, 3\) += (\d+)", calls)
    assert moved and int(moved.group(1)) >= 3, calls


def test_tree_finds_its_own_libraries(installed):
    """Every ELF object in the tree that needs a library the tree carries finds that copy
    through its own RUNPATH ($ORIGIN-relative), with no LD_LIBRARY_PATH (PyInstaller's
    bootloader set one by executing itself again; the launcher does not), and no object
    names a build machine's directory."""
    tree = os.path.dirname(installed)
    internal = os.path.join(tree, "_internal")
    carried = {n for n in os.listdir(internal) if ".so" in n}
    ldso = "/lib64/ld-linux-x86-64.so.2"
    if not os.path.exists(ldso):
        pytest.skip("not x86_64 glibc")
    checked = 0
    for d, _, files in os.walk(tree):
        for n in files:
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                if os.path.islink(p) or f.read(4) != b"\x7fELF":
                    continue
            dyn = subprocess.run(["readelf", "-dW", p], capture_output=True, text=True).stdout
            for rp in re.findall(r"\((?:RPATH|RUNPATH)\)\s+Library r(?:un)?path: \[([^\]]*)\]", dyn):
                assert all(x.startswith("$ORIGIN") for x in rp.split(":")), (p, rp)
            needed = set(re.findall(r"Shared library: \[([^\]]+)\]", dyn)) & carried
            if not needed or n == "nvbind-runtime":
                continue
            out = subprocess.run([ldso, "--list", p], capture_output=True, text=True, env={}).stdout
            for lib in needed:
                where = re.search(rf"^\s*{re.escape(lib)} => (\S+)", out, re.M)
                assert where and os.path.realpath(where.group(1)) == os.path.join(internal, lib), \
                    (p, lib, out)
                checked += 1
    assert checked >= 3         # _ctypes (libffi), zlib (libz), _hashlib (libcrypto)...


def test_podman_precreate_frozen(installed, live_env, tmp_path_factory):
    import engines
    root, image = live_env
    _, pm = engines.prepare(str(tmp_path_factory.mktemp("podman-frozen")), exe=installed,
                            root=root, rootfs=image)
    try:
        r = pm.run(["gpucheck", "/dev/nvidia1", "/dev/nvidia0"], env={"NVIDIA_VISIBLE_DEVICES": "1"})
        assert r.returncode == 0, r.stderr
        assert "open /dev/nvidia1: ENXIO" in r.stdout and "open /dev/nvidia0: ENOENT" in r.stdout
        assert "dlopen libcuda.so.1: OK" in r.stdout
    finally:
        subprocess.run(pm.base() + ["system", "reset", "--force"], capture_output=True)


@pytest.mark.parametrize("runtime", ["runc", "runc-v2"])
def test_runc_create_runtime_frozen(installed, live_env, tmp_path, runtime):
    """Through the launcher's built-in system calls (_nvbind_sys): the mounts, and on
    cgroup v2 the BPF device program, whose attributes hold pointers to its buffers."""
    import engines
    root, image = live_env
    log = str(tmp_path / "log")
    bundle = engines.make_bundle(str(tmp_path / "b"), image, ["gpucheck", "/dev/nvidia1"],
                                 ["NVIDIA_VISIBLE_DEVICES=1"],
                                 {"createRuntime": [engines.nvbind_hook("createRuntime", root, log,
                                                                        exe=installed)]})
    r = engines.run_bundle(bundle, f"frozen-live-{runtime}", runtime)
    assert r.returncode == 0, r.stderr
    assert "open /dev/nvidia1: ENXIO" in r.stdout and "dlopen libcuda.so.1: OK" in r.stdout
    entry = json.loads(open(log).read().splitlines()[-1])
    assert ("cgroup v2" if runtime == "runc-v2" else "cgroup v1") in entry["done"][0]


def test_admin_verbs_frozen(installed, sim_root, tmp_path):
    """The verbs that need package data and jsonschema work frozen (built with -OO)."""
    spec = tmp_path / "nvidia.json"
    r = subprocess.run([installed, "--root", sim_root, "cdi", "generate", "--output", str(spec)],
                       capture_output=True, text=True, env={"NVBIND_CACHE_DIR": str(tmp_path / "c")})
    assert r.returncode == 0, r.stderr
    r = subprocess.run([installed, "cdi", "validate", str(spec)], capture_output=True, text=True, env={})
    assert r.returncode == 0 and "valid" in r.stdout, r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[profiles.x]\nisolation = 'solo'\n")
    r = subprocess.run([installed, "config", "validate", str(bad)], capture_output=True, text=True, env={})
    assert r.returncode == 2 and "profiles.x.isolation" in r.stderr
