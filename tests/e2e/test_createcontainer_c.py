"""nvbind-createcontainer (packaging/frontend/nvbind-createcontainer.c): the createContainer
hook without Python. Its result must be byte for byte what nvbind's own hook makes (the
same links, the same ld.so.cache, which ldconfig wrote in both cases), it must hand every
case it does not handle to nvbind (strace shows which ran), and a real runc container
must get its links and cache through it."""
import json
import os
import shutil
import subprocess
import uuid

import pytest

from conftest import IS_ROOT, REPO

TREE = os.path.join(REPO, "dist", "nvbind-dir")
FAST = os.path.join(TREE, "nvbind-createcontainer")
NVBIND = os.path.join(TREE, "nvbind")
VERSION = "550.54.14"

pytestmark = [
    pytest.mark.skipif(not os.path.exists(FAST), reason="dist/nvbind-dir not built (make test runs make dist)"),
    pytest.mark.skipif(not IS_ROOT, reason="needs root (mount namespaces, mknod)"),
    pytest.mark.skipif(not shutil.which("strace"), reason="strace missing (make apt installs it)"),
]


@pytest.fixture()
def bundle(tmp_path, sim_root):
    """A bundle whose rootfs holds the driver's libraries where the mounts put them."""
    b = tmp_path / "b"
    rootfs = b / "rootfs"
    (rootfs / "usr/lib64").mkdir(parents=True)
    (rootfs / "etc").mkdir()
    (rootfs / "proc").mkdir()
    (rootfs / "sys").mkdir()
    for name in os.listdir(f"{sim_root}/usr/lib64"):
        if name.endswith(VERSION):
            shutil.copy(f"{sim_root}/usr/lib64/{name}", rootfs / "usr/lib64")
    (b / "config.json").write_text(json.dumps({"ociVersion": "1.0.2", "process": {"env": []},
                                               "root": {"path": "rootfs"}}))
    return str(b)


def args(sim_root, log, extra=()):
    return ["--root", sim_root, "--log", log, "hook", "createContainer", "--driver-version", VERSION,
            "--folder", "/usr/lib64",
            "--link", f"libcuda.so.{VERSION}::/usr/lib64/libcuda.so.1",
            "--link", "libcuda.so.1::/usr/lib64/libcuda.so",
            "--link", "libfoo.so.1::/opt/new/dir/libfoo.so", *extra]


def run(exe, argv, bundle, state=None, env=None, tmp_path=None):
    """Run the hook as runc would (stdin: state), in a mount namespace where the rootfs is a
    mount; (rc, stderr, [programs exec'd by path])."""
    rootfs = f"{bundle}/rootfs"
    st = state if state is not None else json.dumps(
        {"ociVersion": "1.0.2", "id": "c1", "status": "creating", "pid": 1, "bundle": bundle})
    trace = f"{tmp_path}/trace-{uuid.uuid4().hex[:6]}"
    e = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **(env or {})}
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                        'mount --bind "$1" "$1" && shift && exec strace -f -qq -e trace=execve -o "$0" "$@"',
                        trace, rootfs, exe, *argv], input=st.encode(), capture_output=True, env=e, timeout=120)
    execs = [line.split('execve("', 1)[1].split('"', 1)[0] for line in open(trace)
             if "execve(" in line and line.rstrip().endswith("= 0")]
    return r.returncode, r.stderr.decode(), execs


def snapshot(bundle):
    rootfs = f"{bundle}/rootfs"
    links = {}
    for d, _, files in os.walk(rootfs):
        for f in files:
            p = os.path.join(d, f)
            if os.path.islink(p):
                links[os.path.relpath(p, rootfs)] = os.readlink(p)
    with open(f"{rootfs}/etc/ld.so.cache", "rb") as f:
        cache = f.read()
    confs = sorted(os.listdir(f"{rootfs}/etc/ld.so.conf.d")) if os.path.isdir(f"{rootfs}/etc/ld.so.conf.d") else []
    return links, cache, confs


def reset(bundle):
    rootfs = f"{bundle}/rootfs"
    for d, _, files in os.walk(rootfs):
        for f in files:
            if os.path.islink(os.path.join(d, f)):
                os.unlink(os.path.join(d, f))
    for p in (f"{rootfs}/etc/ld.so.cache",):
        if os.path.exists(p):
            os.unlink(p)
    shutil.rmtree(f"{rootfs}/etc/ld.so.conf.d", ignore_errors=True)
    shutil.rmtree(f"{rootfs}/opt", ignore_errors=True)


@pytest.mark.parametrize("compat", [False, True])
def test_same_result_as_nvbind_without_python(bundle, sim_root, tmp_path, compat):
    if compat:      # a CUDA image's compat directory with a newer libcuda
        d = f"{bundle}/rootfs/usr/local/cuda/compat"
        os.makedirs(d)
        shutil.copy(f"{sim_root}/usr/lib64/libcuda.so.{VERSION}", f"{d}/libcuda.so.999.1")
    log = str(tmp_path / "log")
    rc, err, execs = run(FAST, args(sim_root, log), bundle, tmp_path=tmp_path)
    assert rc == 0, err
    assert execs == [FAST], execs                  # no Python (ldconfig runs by fexecve)
    fast = snapshot(bundle)
    reset(bundle)
    # nvbind's own hook
    rc, err, execs = run(NVBIND, args(sim_root, log), bundle, tmp_path=tmp_path)
    assert rc == 0, err
    assert fast == snapshot(bundle)                # the same links, conf files and cache bytes
    assert fast[0]["usr/lib64/libcuda.so.1"] == f"libcuda.so.{VERSION}"
    assert fast[0]["opt/new/dir/libfoo.so"] == "libfoo.so.1"
    assert (b"/usr/local/cuda/compat/libcuda.so" in fast[1]) == compat
    lines = [json.loads(x) for x in open(log)]
    assert len(lines) == 2
    for line in lines:
        line.pop("time"), line.pop("duration_ms")
    assert lines[0] == lines[1]                    # the same log line, key for key
    assert lines[0]["outcome"] == "ok" and lines[0]["id"] == "c1"


def test_plain_config_file_is_handled_without_python(bundle, sim_root, tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text('default_profile = "default"\n')
    rc, err, execs = run(FAST, ["--config", str(conf), *args(sim_root, "off")], bundle, tmp_path=tmp_path)
    assert rc == 0 and execs == [FAST], err


def test_cache_matches_ldconfig_run_by_hand(bundle, sim_root, tmp_path):
    """ldconfig is the reference: the cache is what `ldconfig -r ROOTFS FOLDER` writes."""
    rc, err, _ = run(FAST, args(sim_root, "off"), bundle, tmp_path=tmp_path)
    assert rc == 0, err
    links, cache, _ = snapshot(bundle)
    os.unlink(f"{bundle}/rootfs/etc/ld.so.cache")
    subprocess.run(["ldconfig", "-r", f"{bundle}/rootfs", "/usr/lib64"], check=True)
    assert open(f"{bundle}/rootfs/etc/ld.so.cache", "rb").read() == cache


@pytest.mark.parametrize("case", ["escaped-bundle", "config-option", "config-missing", "config-key", "unknown-arg",
                                  "escaped-root-path", "dotdot-root-path", "duplicate-root"])
def test_hands_over_to_nvbind(bundle, sim_root, tmp_path, case):
    log = str(tmp_path / "log")
    argv, env = args(sim_root, log), {}
    state = {"ociVersion": "1.0.2", "id": "c2", "status": "creating", "bundle": bundle}
    text = json.dumps(state)
    cfg = {"ociVersion": "1.0.2", "process": {"env": []}, "root": {"path": "rootfs"}}
    if case == "escaped-bundle":
        text = text.replace('"bundle": "/', '"bundle": "\\/', 1)
        assert json.loads(text)["bundle"] == bundle
    elif case == "config-option":           # a comment is enough: it reads no TOML
        conf = tmp_path / "c.toml"
        conf.write_text('# log_level = "debug"\n')
        argv = ["--config", str(conf), *argv]
    elif case == "config-missing":
        argv = ["--config", str(tmp_path / "nonexistent.toml"), *argv]
    elif case == "config-key":
        conf = tmp_path / "etc-config.toml"
        conf.write_text('ldconfig = "/sbin/ldconfig"\n')
        env = {"NVBIND_CONFIG": str(conf)}
    elif case == "unknown-arg":
        argv = argv + ["--bogus"]
    elif case == "escaped-root-path":
        cfg["root"]["path"] = "root\u0066s"
        (open(f"{bundle}/config.json", "w")).write(json.dumps(cfg, ensure_ascii=False).replace("rootfs", "root\\u0066s"))
    elif case == "dotdot-root-path":
        cfg["root"]["path"] = "x/../rootfs"
        os.makedirs(f"{bundle}/x")
        open(f"{bundle}/config.json", "w").write(json.dumps(cfg))
    elif case == "duplicate-root":
        open(f"{bundle}/config.json", "w").write(
            '{"ociVersion":"1.0.2","process":{"env":[]},"root":{"path":"elsewhere"},"root":{"path":"rootfs"}}')
    rc, err, execs = run(FAST, argv, bundle, state=text, env=env, tmp_path=tmp_path)
    assert NVBIND in execs, (case, execs)
    if case == "unknown-arg":
        assert rc != 0 and "unknown argument '--bogus'" in err
    elif case == "config-missing":
        assert rc != 0 and "does not exist" in err
    else:
        assert rc == 0, (case, err)
        links, _, _ = snapshot(bundle)
        assert links["usr/lib64/libcuda.so.1"] == f"libcuda.so.{VERSION}"


def test_failure_is_reported_by_nvbind(bundle, sim_root, tmp_path):
    """A link where a directory cannot be made: nvbind redoes the work and says why."""
    open(f"{bundle}/rootfs/opt", "w").close()          # /opt is a file: /opt/new/dir cannot exist
    log = str(tmp_path / "log")
    rc, err, execs = run(FAST, args(sim_root, log), bundle, tmp_path=tmp_path)
    assert NVBIND in execs and rc != 0 and "nvbind: error" in err
    entry = json.loads(open(log).read().splitlines()[-1])
    assert entry["outcome"] != "ok" and entry["stage"] == "createContainer"


def test_link_out_of_rootfs_stays_inside(bundle, sim_root, tmp_path):
    """An image link /opt -> <a host directory> is resolved inside the rootfs (openat2
    RESOLVE_IN_ROOT), where it leads nowhere: nothing is written on the host, and nvbind
    (handed the case) refuses it exactly as its own hook does."""
    outside = tmp_path / "host-side"
    outside.mkdir()
    os.symlink(str(outside), f"{bundle}/rootfs/opt")
    rc, err, execs = run(FAST, args(sim_root, "off"), bundle, tmp_path=tmp_path)
    assert os.listdir(outside) == []
    assert NVBIND in execs and rc != 0 and "nvbind: error" in err
    # the same link pointing inside the rootfs (absolute, as images have them) is followed there
    os.unlink(f"{bundle}/rootfs/opt")
    os.makedirs(f"{bundle}/rootfs/srv/opt")
    os.symlink("/srv/opt", f"{bundle}/rootfs/opt")
    rc, err, execs = run(FAST, args(sim_root, "off"), bundle, tmp_path=tmp_path)
    assert rc == 0 and execs == [FAST], err
    assert os.readlink(f"{bundle}/rootfs/srv/opt/new/dir/libfoo.so") == "libfoo.so.1"
