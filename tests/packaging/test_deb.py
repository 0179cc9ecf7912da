"""The Debian package (make deb), installed for real on this machine with apt-get.

install -> nvbind runs from /usr/bin -> a podman container gets GPU 1 of the simulated host
through the packaged hooks.d file (root set in /etc/nvbind/config.toml) -> systemd accepts
the units -> remove keeps the configuration -> purge leaves no file behind. And an upgrade
from an older build keeps an edited conffile by dpkg's own conffile logic.

Slow-ish (two package builds, apt-get runs, one container). Always purges in a finally.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from conftest import IS_ROOT, REPO
from nvbind.settings import _cache_file

BUILD = os.path.join(REPO, "packaging", "deb", "build.py")
CONF = "/etc/nvbind/config.toml"
# where the hooks cache the validated CONF (named by a checksum of its path)
CONF_CACHE = _cache_file("/run/nvbind", CONF)
HOOKS = "/usr/share/containers/oci/hooks.d"
UNITS = ["nvbind-cdi.service", "nvbind-metrics.service", "nvbind-device-plugin.service"]
APT = ["apt-get", "-o", "DPkg::Lock::Timeout=900", "-y", "-q"]
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
       "LC_ALL": "C.UTF-8"}

# Not compared by the "purge leaves nothing" check, each for its reason:
SKIP = (
    "/proc", "/sys", "/dev", "/run", "/var/run",    # kernel and volatile (checked by name below)
    "/tmp", "/var/tmp",                             # scratch: this test's own state lives there
    "/work",                                        # the project's worktrees (other helpers write)
    "/root/.cache",                                 # pip/venv caches of concurrent builds
    "/home",     # users' homes: the package adds no user (a concurrent rootless test did)
    "/var/lib/apt", "/var/cache/apt", "/var/lib/dpkg", "/var/log/apt", "/var/log/dpkg.log",
    "/var/log/alternatives.log", "/var/cache/debconf",  # apt's and dpkg's own logs and state
    "/var/cache/man",                               # man-db's index, rebuilt by its trigger
    "/var/lib/containers", "/var/cache/containers",  # podman's default store (other users)
    "/var/log/journal", "/var/lib/systemd/timers",
)

pytestmark = [
    pytest.mark.skipif(not IS_ROOT, reason="installs a package with apt-get: needs root"),
    pytest.mark.skipif(not shutil.which("dpkg-deb") or not shutil.which("apt-get"),
                       reason="not a Debian system (no dpkg-deb / apt-get)"),
]


def version() -> str:
    sys.path.insert(0, os.path.join(REPO, "hook"))
    from nvbind import __version__
    return __version__


def sh(cmd, check=True, timeout=600, env=None):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env or ENV, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if check:
        assert r.returncode == 0, f"{cmd}: exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def build(ver: str, out: str, work: str) -> str:
    tree = os.path.join(REPO, "dist", "nvbind-dir")
    if not os.path.isfile(os.path.join(tree, "nvbind")):
        pytest.skip("dist/nvbind-dir not built (make test runs `make dist` and `make deb` first)")
    sh([sys.executable, BUILD, "--version", ver, "--out", out, "--work", work])
    return os.path.join(out, f"nvbind_{ver}_amd64.deb")


@pytest.fixture(scope="module")
def deb():
    """dist/nvbind_<version>_amd64.deb: `make deb`'s, or built here when missing or stale."""
    path = os.path.join(REPO, "dist", f"nvbind_{version()}_amd64.deb")
    inputs = [os.path.join(d, f) for d in (os.path.join(REPO, "packaging", "deb"),)
              for f in os.listdir(d)] + [os.path.join(REPO, "dist", "nvbind-dir", "nvbind"),
                                             os.path.join(REPO, "dist", "nvbind-k8s")]
    if not os.path.exists(path) or any(os.path.getmtime(p) > os.path.getmtime(path)
                                       for p in inputs if os.path.exists(p)):
        build(version(), os.path.join(REPO, "dist"), os.path.join(REPO, "build", "deb"))
    return path


@pytest.fixture(scope="module")
def old_deb(tmp_path_factory):
    """The same tree packaged as 0.0.1: the 'older build' an upgrade starts from."""
    d = tmp_path_factory.mktemp("olddeb")
    return build("0.0.1", str(d), str(d / "work"))


def snapshot() -> set[str]:
    out = set()
    def skipped(p):
        return any(p == s or p.startswith(s + "/") for s in SKIP)
    for d, dirs, files in os.walk("/"):
        dirs[:] = [n for n in dirs if not skipped(os.path.join(d, n))]
        out.update(p for p in (os.path.join(d, n) for n in dirs + files) if not skipped(p))
    return out


def dpkg_excluded(path: str) -> bool:
    """dpkg's path-exclude/path-include (e.g. Debian container images drop man pages)."""
    import fnmatch
    import glob
    excluded = False
    for cfg in ["/etc/dpkg/dpkg.cfg", *sorted(glob.glob("/etc/dpkg/dpkg.cfg.d/*"))]:
        try:
            lines = open(cfg).read().splitlines()
        except OSError:
            continue
        for line in lines:
            opt, _, pattern = line.strip().partition(" ")
            opt = opt.removeprefix("--").partition("=")[0]
            pattern = pattern.strip() or line.partition("=")[2].strip()
            if opt in ("path-exclude", "path-include") and fnmatch.fnmatch(path, pattern):
                excluded = opt == "path-exclude"
    return excluded


def installed() -> bool:
    r = sh(["dpkg-query", "-W", "-f", "${Status}", "nvbind"], check=False)
    return r.returncode == 0 and "not-installed" not in r.stdout


def purge():
    if installed():
        sh(APT + ["purge", "nvbind"])


@pytest.fixture
def host():
    """Before: no nvbind package and the file list of /. After: purged, whatever happened."""
    if installed():
        pytest.fail("the nvbind package is already installed here: the purge check needs a "
                    "host without it (apt-get purge nvbind)")
    # files purge removes by design that a machine may have from nvbind runs without the
    # package (every hook run logs to /var/log/nvbind.log by default): set aside, restored
    aside = tempfile.mkdtemp(prefix="nvbind-deb-aside-")
    kept = []
    for p in ("/var/log/nvbind.log", "/var/run/cdi/nvidia.json"):
        if os.path.lexists(p):
            shutil.move(p, os.path.join(aside, os.path.basename(p)))
            kept.append(p)
    before = snapshot()
    try:
        yield before
    finally:
        purge()
        for p in kept:
            if not os.path.lexists(p):
                shutil.move(os.path.join(aside, os.path.basename(p)), p)
        shutil.rmtree(aside, ignore_errors=True)


def assert_no_trace(before: set[str]):
    after = snapshot()
    assert not after - before, f"left behind after purge: {sorted(after - before)[:40]}"
    assert not before - after, f"gone after purge: {sorted(before - after)[:40]}"
    # /run/nvbind itself is shared with every other nvbind run on this machine (the test
    # suites of the project run concurrently): the file this package's hooks cached is gone
    for p in (CONF_CACHE, "/var/log/nvbind.log", "/var/run/cdi/nvidia.json", "/etc/nvbind"):
        assert not os.path.lexists(p), p


def set_root(root: str):
    """The admin's edit: discovery on the simulated host (a top-level key, appended)."""
    with open(CONF, "a") as f:
        f.write(f'\nroot = "{root}"\n')


def test_install_gpu_units_remove_purge(deb, host, live_env, tmp_path_factory):
    import engines
    root, image = live_env
    sh(APT + ["install", os.path.abspath(deb)])

    # --- the commands
    r = sh(["nvbind", "--version"])
    assert r.stdout.strip() == f"nvbind {version()}"
    assert os.path.realpath("/usr/bin/nvbind") == "/usr/lib/nvbind/nvbind"
    # called as nvbind-runtime it is the runtime shim: `--version` goes through to runc
    r = sh(["nvbind-runtime", "--version"], env=dict(ENV, NVBIND_LOG="off"))
    assert r.stdout.startswith("runc version"), r.stdout

    # --- what the package put where
    files = set(sh(["dpkg", "-L", "nvbind"]).stdout.split())
    assert {f"{HOOKS}/50-nvbind-oci.json", f"{HOOKS}/50-nvbind-poststop.json",
            "/usr/share/nvbind/hooks.d/50-nvbind-precreate.json", CONF,
            "/usr/share/man/man1/nvbind.1.gz", "/usr/share/doc/nvbind/copyright",
            "/usr/share/lintian/overrides/nvbind"} <= files
    # buildah refuses `precreate` ("unknown stage"): never in a directory it reads by default
    assert not [f for f in os.listdir(HOOKS) if "precreate" in open(f"{HOOKS}/{f}").read()]
    for f in [f"{HOOKS}/50-nvbind-oci.json", f"{HOOKS}/50-nvbind-poststop.json",
              "/usr/share/nvbind/hooks.d/50-nvbind-precreate.json"]:
        h = json.load(open(f))["hook"]
        assert h["path"] == "/usr/bin/nvbind" and h["env"] and 0 < h["timeout"] <= 30, f
    assert sh(["dpkg-query", "-W", "-f", "${Conffiles}", "nvbind"]).stdout.split()[0] == CONF
    sh(["nvbind", "config", "validate", CONF])
    man = not dpkg_excluded("/usr/share/man/man1/nvbind.1.gz")
    assert "/usr/share/man/man1/nvbind.1.gz" in sh(["dpkg-deb", "-c", deb]).stdout
    if man:    # else this host's dpkg drops every man page (path-exclude), ours too
        assert "GPU injection hook" in sh(["man", "-P", "cat", "nvbind"]).stdout
        # nvbind-runtime.1.gz links to nvbind.1.gz
        assert sh(["man", "-w", "nvbind-runtime"]).stdout.strip() == "/usr/share/man/man1/nvbind.1.gz"

    # --- systemd: the units verify; cdi enabled, the others not (deb-systemd-helper's state)
    units = [f"/lib/systemd/system/{u}" for u in UNITS]
    # verify also runs `man nvbind(1)` for Documentation=, unless man pages are excluded
    r = sh(["systemd-analyze", "verify", *([] if man else ["--man=no"]), *units], check=False)
    assert r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(), r.stdout + r.stderr
    wants = "/etc/systemd/system/multi-user.target.wants"
    assert os.readlink(f"{wants}/nvbind-cdi.service") == units[0]
    assert not os.path.lexists(f"{wants}/nvbind-metrics.service")
    assert not os.path.lexists(f"{wants}/nvbind-device-plugin.service")
    state = {u: sh(["systemctl", "is-enabled", u], check=False).stdout.strip() for u in UNITS}
    assert state == {"nvbind-cdi.service": "enabled", "nvbind-metrics.service": "disabled",
                     "nvbind-device-plugin.service": "disabled"}

    set_root(root)
    sh(["nvbind", "config", "validate"])

    # --- the cdi unit's own command line (no systemd runs here): it writes a valid spec
    unit = open(units[0]).read()
    cmd = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1).split()
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(100):
            if os.path.exists("/var/run/cdi/nvidia.json"):
                break
            assert p.poll() is None, p.stderr.read()
            subprocess.run(["sleep", "0.1"])
        sh(["nvbind", "cdi", "validate", "/var/run/cdi/nvidia.json"])
        assert p.poll() is None, "--watch exits"
    finally:
        p.terminate()
        p.wait(timeout=10)

    # --- the device-plugin unit's command (nvbind-k8s, with gRPC) serves the kubelet API
    # socket for the simulated host's GPUs, and removes it on SIGTERM
    unit = open(units[2]).read()
    cmd = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1).split()
    plugins = tmp_path_factory.mktemp("plugins")
    p = subprocess.Popen(cmd + ["--plugin-dir", str(plugins)], env=ENV, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(300):
            if (plugins / "nvbind-gpu.sock").is_socket():
                break
            assert p.poll() is None, p.stderr.read()
            subprocess.run(["sleep", "0.1"])
        assert (plugins / "nvbind-gpu.sock").is_socket()
    finally:
        p.terminate()
        err = p.communicate(timeout=30)[1]
    assert "serving nvidia.com/gpu" in err and "sockets removed" in err, err
    assert not list(plugins.iterdir())

    # --- a real podman container gets GPU 1 through the packaged hooks.d files
    pm = engines.Podman(str(tmp_path_factory.mktemp("pd")), HOOKS)   # runroot: < 50 chars
    pm.import_rootfs(image)
    try:
        r = pm.run(["gpucheck", "/dev/nvidia1", "/dev/nvidia0"], env={"NVIDIA_VISIBLE_DEVICES": "1"})
        assert r.returncode == 0, r.stdout + r.stderr
        assert "open /dev/nvidia1: ENXIO" in r.stdout      # created, and the cgroup allows it
        assert "open /dev/nvidia0: ENOENT" in r.stdout     # not asked for: not there
        assert "dlopen libcuda.so.1: OK" in r.stdout
    finally:
        subprocess.run(pm.base() + ["system", "reset", "--force"], capture_output=True, timeout=120)
    log = [json.loads(line) for line in open("/var/log/nvbind.log")]
    assert [e["stage"] for e in log if e.get("outcome") == "ok"][-2:] == ["createRuntime", "poststop"]
    assert os.path.exists(CONF_CACHE)    # the hooks' cache: purge must take it away

    # --- remove keeps the configuration (and takes away the spec that names nvbind)
    sh(APT + ["remove", "nvbind"])
    assert not os.path.lexists("/usr/bin/nvbind") and not os.path.exists("/usr/lib/nvbind")
    assert f'root = "{root}"' in open(CONF).read()
    assert sh(["dpkg-query", "-W", "-f", "${Status}", "nvbind"]).stdout == "deinstall ok config-files"
    assert not os.path.exists("/var/run/cdi/nvidia.json")

    # --- purge leaves nothing behind
    sh(APT + ["purge", "nvbind"])
    assert_no_trace(host)


def test_upgrade_keeps_edited_conffile(deb, old_deb, host):
    sh(APT + ["install", old_deb])
    # the same frozen tree under a lower package version (the program still says its own)
    assert sh(["dpkg-query", "-W", "-f", "${Version}", "nvbind"]).stdout == "0.0.1"
    with open(CONF, "a") as f:
        f.write('\nlog_level = "warn"\n')
    edited = open(CONF).read()
    sh(["nvbind", "config", "validate"])
    # no --force-conf* option and no terminal: dpkg must not need to ask (the packaged
    # file did not change, so the admin's version stays without a prompt)
    r = sh(APT + ["install", os.path.abspath(deb)])
    assert f"Unpacking nvbind ({version()}) over (0.0.1)" in r.stdout
    assert sh(["dpkg-query", "-W", "-f", "${Version}", "nvbind"]).stdout == version()
    assert open(CONF).read() == edited
    assert not [f for f in os.listdir("/etc/nvbind") if f != "config.toml"]  # no .dpkg-new/-old
    # the unit stays enabled across the upgrade
    assert os.path.lexists("/etc/systemd/system/multi-user.target.wants/nvbind-cdi.service")
    sh(APT + ["purge", "nvbind"])
    assert_no_trace(host)


def test_rootless_podman_with_the_package_installed(deb):
    """After a system-wide install, a user's rootless podman reads the packaged hooks.d files
    (its default /usr/share/containers/oci/hooks.d: no --hooks-dir here), and nvbind runs
    as uid 0 of the user's namespace, where /var/log/nvbind.log and /run/nvbind are not
    its own: a container that asks for nothing runs; one that asks for a GPU through its
    environment is refused by the createRuntime hook with nvbind's one line (rootless
    containers get GPUs through CDI or the precreate hook: tests/engines/test_rootless.py)."""
    for tool in ("podman", "runc", "newuidmap", "newgidmap", "runuser", "unshare"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed (make setup installs it)")
    if installed():
        pytest.fail("the nvbind package is already installed here (apt-get purge nvbind)")
    import rootless
    import simhost
    import testimage
    state = tempfile.mkdtemp(prefix="nvbind-deb-rl-", dir="/var/tmp")  # the user reaches it
    os.chmod(state, 0o755)
    user = pm = None
    try:
        sh(APT + ["install", os.path.abspath(deb)])
        root = f"{state}/host"
        simhost.build(root, gpus=2, mig=False, version="550.54.14", stale=False)
        set_root(root)
        user = rootless.User()
        pm = rootless.RootlessPodman(user, state, root)
        pm.import_rootfs(testimage.build(f"{state}/image-rootfs"), "localhost/nvbind-deb-rl:latest")
        r, _ = pm.run(["sh", "-c", "echo ran; ls /dev"], image="localhost/nvbind-deb-rl:latest")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "ran" in r.stdout and "nvidia" not in r.stdout
        r, _ = pm.run(["gpucheck", "/dev/nvidia1"], image="localhost/nvbind-deb-rl:latest",
                      env={"NVIDIA_VISIBLE_DEVICES": "1"})
        assert r.returncode != 0, r.stdout
        assert "nvbind: error: container " in r.stderr and "without host root" in r.stderr, r.stderr
        assert "use the precreate hook or CDI" in r.stderr and "Traceback" not in r.stderr
        # the user cannot append to root's /var/log/nvbind.log: the hook says so in a
        # warning that names the errno, not strerror's "Permission denied", which podman
        # would have shown in place of the error line (libpod getOCIRuntimeError)
        assert "cannot write log /var/log/nvbind.log: EACCES" in r.stderr, r.stderr
    finally:
        if pm is not None:
            pm.close()
        if user is not None:
            user.remove()
        purge()
        shutil.rmtree(state, ignore_errors=True)
