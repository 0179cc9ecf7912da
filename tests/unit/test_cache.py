"""The inventory cache: used when fresh and ours, rebuilt when anything it depends on moves."""
import json
import os
import subprocess
import sys
import sysconfig

import pytest

import nvbind
from conftest import base_config, run_nvbind
from nvbind import settings
from nvbind.host import cache, inventory


@pytest.fixture
def root(sim_root, tmp_path):
    r = str(tmp_path / "root")
    subprocess.run(["cp", "-a", sim_root, r], check=True)
    return r


def cfile(cache_dir, root):
    return os.path.join(cache_dir, cache._name(root))


def test_second_run_uses_the_cache(root, tmp_path, monkeypatch):
    cdir = str(tmp_path / "cache")
    first = inventory.cached(root, cdir)
    assert os.path.exists(cfile(cdir, root))
    assert oct(os.stat(cfile(cdir, root)).st_mode & 0o777) == "0o644"
    monkeypatch.setattr(inventory, "build", lambda *a, **k: pytest.fail("rebuilt"))
    again = inventory.cached(root, cdir)
    assert again.to_json() == first.to_json()


@pytest.mark.parametrize("change", ["driver", "node", "ldcache", "corrupt", "foreign", "format"])
def test_invalidation(root, tmp_path, change):
    cdir = str(tmp_path / "cache")
    inventory.cached(root, cdir)
    path = cfile(cdir, root)
    if change == "driver":
        with open(root + "/proc/driver/nvidia/version", "w") as f:
            f.write("NVRM version: NVIDIA UNIX x86_64 Kernel Module  555.1.1  x\n")
    elif change == "node":
        os.unlink(root + "/dev/nvidia1")
    elif change == "ldcache":
        subprocess.run(["ldconfig", "-r", root], check=True)
        os.utime(root + "/etc/ld.so.cache", ns=(1, 1))
    elif change == "corrupt":
        with open(path, "w") as f:
            f.write('{"format": "nvbind-inventory-1", "fingerprint": ')
    elif change == "foreign":
        os.chmod(path, 0o666)     # writable by others: could steer mounts, never trusted
    elif change == "format":
        doc = json.load(open(path))
        doc["format"] = "other"
        json.dump(doc, open(path, "w"))
    calls = []
    real = inventory.build
    inventory.build = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        inv = inventory.cached(root, cdir)
    finally:
        inventory.build = real
    assert calls == [1]
    if change == "driver":
        assert inv.driver_version == "555.1.1"
    if change == "node":
        assert "/dev/nvidia1" not in inv.nodes


def test_forged_cache_content_is_not_trusted_without_matching_fingerprint(root, tmp_path):
    cdir = str(tmp_path / "cache")
    inventory.cached(root, cdir)
    path = cfile(cdir, root)
    doc = json.load(open(path))
    doc["inventory"]["files"].append({"kind": "library", "capability": "compute", "path": "/etc/shadow",
                                      "host_path": "/etc/shadow", "reason": "forged", "soname": None})
    doc["fingerprint"]["driver"] = "1.2.3"
    json.dump(doc, open(path, "w"))
    inv = inventory.cached(root, cdir)
    assert not [f for f in inv.files if f.path == "/etc/shadow"]


def test_refresh_and_unwritable_cache(root, tmp_path):
    cdir = str(tmp_path / "cache")
    r = run_nvbind(["--root", root, "info", "--refresh", "--json"], env={"NVBIND_CACHE_DIR": cdir})
    assert r.returncode == 0, r.stderr
    assert json.load(open(cfile(cdir, root)))["inventory"]["backend"] == "procfs"
    # disk full / read-only cache dir: the hook still decides correctly and says so in the log
    log = tmp_path / "log"
    r = run_nvbind(["--root", root, "hook", "precreate"],
                   json.dumps(base_config(env=["NVIDIA_VISIBLE_DEVICES=1"])),
                   env={"NVBIND_CACHE_DIR": "/proc/nvbind-cannot-exist", "NVBIND_LOG": str(log)})
    assert r.returncode == 0 and "/dev/nvidia1" in r.stdout.decode()


def test_hook_paths_never_import_nvml_or_jsonschema(sim_root, tmp_path):
    """Poisoned pynvml and jsonschema first on the path: every hook stage still works."""
    poison = tmp_path / "poison"
    (poison / "jsonschema").mkdir(parents=True)
    for mod in ("pynvml.py", "jsonschema/__init__.py", "referencing.py"):
        (poison / mod).write_text("raise SystemExit('imported ' + __name__ + ' on a hook path')\n")
    env = {"PYTHONPATH": str(poison), "NVBIND_CACHE_DIR": str(tmp_path / "cache")}
    for envlist in ([], ["NVIDIA_VISIBLE_DEVICES=1"], ["NVIDIA_VISIBLE_DEVICES=all",
                                                      "NVIDIA_DRIVER_CAPABILITIES=all"]):
        for _ in range(2):      # cold cache, then warm
            r = run_nvbind(["--root", sim_root, "hook", "precreate"],
                           json.dumps(base_config(env=envlist)), env=env)
            assert r.returncode == 0, r.stderr
    state = json.dumps({"ociVersion": "1.2.0", "id": "x", "status": "stopped", "bundle": str(tmp_path)})
    assert run_nvbind(["hook", "poststop"], state, env=env).returncode == 0
    # and the poison is real: a verb that does need jsonschema trips on it
    r = run_nvbind(["cdi", "validate", "/dev/null"], env=env)
    assert r.returncode != 0


def test_importtime_of_a_gpu_request(sim_root, tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "nvbind")
    r = subprocess.run([sys.executable, "-X", "importtime", exe, "--root", sim_root, "hook", "precreate"],
                       input=json.dumps(base_config(env=["NVIDIA_VISIBLE_DEVICES=1"])).encode(),
                       capture_output=True, env={"PATH": "/usr/bin:/bin", "NVBIND_LOG": "off",
                                                 "NVBIND_CACHE_DIR": str(tmp_path)})
    assert r.returncode == 0
    mods = {line.split("|")[-1].strip() for line in r.stderr.decode().splitlines() if "|" in line}
    assert not mods & {"pynvml", "jsonschema", "dataclasses", "json", "re", "inspect", "tomllib"}, \
        sorted(mods & {"pynvml", "jsonschema", "dataclasses", "json", "re", "inspect", "tomllib"})


# nvbind (its frozen entry, nvbind/frozen.py) under -X importtime, in an interpreter started
# as the frozen tree's launcher starts it: isolated and without `site` (which imports os),
# with nvbind and the venv's packages (jsonschema checks a new configuration file) on the path
AS_LAUNCHED = [sys.executable, "-I", "-S", "-X", "importtime", "-c",
               "import sys; sys.path[:0] = sys.argv.pop(1).split(':'); sys.argv[0] = 'nvbind'; "
               "import nvbind.frozen",
               os.path.dirname(os.path.dirname(nvbind.__file__)) + ":" + sysconfig.get_paths()["purelib"]]


def test_no_request_never_imports_os(sim_root, tmp_path):
    """A container that asks for nothing is answered without the `os` module (~1 ms of a
    frozen hook: nvbind.early), with no configuration file and with one whose checked copy
    is cached (as the .deb installs /etc/nvbind/config.toml)."""
    cfg = tmp_path / "config.toml"
    cfg.write_text('log_level = "info"\n')
    for config in ([], ["--config", str(cfg)]):
        for _ in range(2):      # the second: the configuration's checked copy is cached
            r = subprocess.run([*AS_LAUNCHED, *config, "--root", sim_root, "hook", "precreate"],
                               input=json.dumps(base_config()).encode(), capture_output=True,
                               env={"NVBIND_LOG": str(tmp_path / "log"),
                                    "NVBIND_CACHE_DIR": str(tmp_path / "cache")})
            assert r.returncode == 0, r.stderr.decode()[-2000:]
        assert json.loads(r.stdout) == base_config()        # the config, back as it came
        mods = {line.split("|")[-1].strip() for line in r.stderr.decode().splitlines() if "|" in line}
        assert "nvbind.oci" in mods and "nvbind.log" in mods     # importtime saw the hook run
        assert "os" not in mods, sorted(mods)
    assert os.listdir(tmp_path / "cache") == [f"config-{settings.name_hash(os.fsencode(str(cfg)))}.json"]
    assert len(open(tmp_path / "log").read().splitlines()) == 4


def test_importtime_of_the_create_container_entry(sim_root, tmp_path):
    """The createContainer entry every GPU container gets (links, the ld cache through the
    host's ldconfig, the user record) loads neither ctypes (its system calls go through
    the launcher's _nvbind_sys when frozen, _ctypes here), signal (an IntEnum wrapper), os
    (nvbind.early) nor the other heavy modules, and no extension module it can do without
    (select, fcntl, zlib: ~0.4 ms each to load)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: ldconfig runs in a private mount namespace")
    pre = run_nvbind(["--root", sim_root, "hook", "precreate"],
                     json.dumps(base_config(env=["NVIDIA_VISIBLE_DEVICES=1"])),
                     env={"PATH": "/usr/bin:/bin", "NVBIND_LOG": "off", "NVBIND_CACHE_DIR": str(tmp_path)})
    assert pre.returncode == 0, pre.stderr
    entry = json.loads(pre.stdout)["hooks"]["createContainer"][0]
    args = entry["args"][entry["args"].index("hook"):]
    bundle = tmp_path / "b"
    (bundle / "rootfs" / "etc").mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps(base_config()))
    state = json.dumps({"ociVersion": "1.2.0", "id": "imp", "pid": os.getpid(), "bundle": str(bundle)})
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'lease_dir = "{tmp_path}/leases"\n')
    for _ in range(2):      # the second: the configuration's checked copy is cached
        r = subprocess.run([*AS_LAUNCHED, "--config", str(cfg), "--root", sim_root, *args],
                           input=state.encode(), capture_output=True,
                           env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "NVBIND_LOG": "off"})
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert os.path.exists(bundle / "rootfs/etc/ld.so.cache")         # the work was done
    mods = {line.split("|")[-1].strip() for line in r.stderr.decode().splitlines() if "|" in line}
    assert "nvbind.apply.ldcache" in mods and "_ctypes" in mods
    heavy = {"ctypes", "signal", "subprocess", "json", "re", "dataclasses", "inspect", "pynvml",
             "jsonschema", "tomllib", "argparse", "select", "fcntl", "zlib", "os"}
    assert not mods & heavy, sorted(mods & heavy)
