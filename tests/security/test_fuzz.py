"""Every parser, fed generated input: a clean error or a result, never anything else.

10,000 examples per parser (derandomized, so CI is repeatable); a sample also goes
through the real CLI, which must answer exit 2 and one `nvbind: error:` line.
"""
import json
import subprocess
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import nvbind_cmd, run_nvbind
from nvbind import settings as config, oci
from nvbind.core import requirements
from nvbind.errors import InputError
from nvbind.host import ldcache, procfs
from nvbind.core.request import from_config

MANY = settings(max_examples=10_000, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
SOME = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=8)
env_keys = st.sampled_from(["NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "CUDA_VERSION",
                            "NVIDIA_REQUIRE_CUDA", "NVIDIA_DISABLE_REQUIRE", "NVIDIA_MIG_CONFIG_DEVICES",
                            "NVBIND_PROFILE", "PATH"])
ann_keys = st.sampled_from(["nvbind.io/gpus", "nvbind.io/capabilities", "nvbind.io/isolation",
                            "nvbind.io/memory-limit", "nvbind.io/profile", "x"])
values = st.text(max_size=40) | st.sampled_from(["all", "none", "void", "", "0", "0,1", "GPU-x", "0:1",
                                                 "compute,utility", "exclusive", "12GB", "cuda>=12"])


def clean(fn, *args):
    try:
        return fn(*args)
    except InputError:
        return None


@MANY
@given(st.one_of(st.text(max_size=200), json_values.map(json.dumps)))
def test_state(text):
    clean(oci.parse_state, text)


@MANY
@given(st.one_of(st.text(max_size=200), json_values.map(json.dumps),
                 st.fixed_dictionaries({"process": json_values, "root": json_values}, optional={
                     "annotations": json_values, "mounts": json_values, "linux": json_values}).map(json.dumps)))
def test_config_json(text):
    clean(oci.parse_config, text)


@MANY
@given(st.dictionaries(env_keys, values, max_size=6), st.dictionaries(ann_keys, values, max_size=4),
       st.booleans())
def test_env_and_annotation_values(env, ann, privileged):
    cfg = {"process": {"capabilities": {"bounding": ["CAP_SYS_ADMIN"] if privileged else []}}}
    clean(from_config, env, ann, cfg, {"mounts": True})


@MANY
@given(st.text(max_size=80))
def test_requirement_expressions(expr):
    try:
        requirements.check([expr], {"cuda": "12.4", "driver": "550.54.14"}, [None])
    except InputError:
        pass
    except Exception as e:  # a failed requirement is an NvbindError: also clean
        from nvbind.errors import NvbindError
        assert isinstance(e, NvbindError), repr(e)


@MANY
@given(st.binary(max_size=400), st.integers(0, 40), st.integers(0, 2 ** 32 - 1))
def test_ld_so_cache(noise, cut, count):
    head = ldcache.HEADER.pack(ldcache.NEW_MAGIC, count % 50000 if cut % 2 else count, len(noise), 2, 0)
    for data in (noise, head + noise, (head + noise)[:cut], ldcache.OLD_MAGIC + noise):
        try:
            ldcache.parse(data)
        except ldcache.CacheError:
            pass


@MANY
@given(st.text(max_size=300))
def test_procfs_files(text):
    procfs.parse_version(text)
    procfs.parse_information(text)
    procfs.parse_devices(text)
    procfs.parse_mig_minors(text)
    procfs.normalize_bus_id(text[:30])


@MANY
@given(st.text(max_size=200))
def test_config_file(text):
    try:
        config.parse("/etc/nvbind/config.toml", text.encode("utf-8", "surrogatepass"))
    except InputError:
        pass


@MANY
@given(st.text(max_size=60))
def test_device_lists(value):
    from nvbind.core import edits
    from nvbind.host.model import Gpu, Inventory, Mig
    inv = Inventory(root="/", backend="t", driver_version="1.0",
                    gpus=[Gpu(0, 0, "GPU-a", "0000:07:00.0", "m", "/dev/nvidia0",
                              migs=(Mig(0, 0, 1, 0, "MIG-b", ()),))])
    try:
        req = from_config({"NVIDIA_VISIBLE_DEVICES": value}, {})
        if not req.empty:
            edits.select(inv, req)
    except InputError:
        pass


@SOME
@given(st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())))
def test_cli_answers_cleanly(data):
    for stage in ("precreate", "createRuntime", "createContainer"):
        r = subprocess.run(nvbind_cmd() + ["hook", stage], input=data, capture_output=True, timeout=30,
                           env={"PATH": "/usr/bin:/bin", "NVBIND_LOG": "off"})
        err = r.stderr.decode(errors="replace")
        assert "Traceback" not in err
        if r.returncode != 0:
            assert r.returncode in (1, 2) and err.startswith("nvbind: error: ") and r.stdout == b""


def test_oversized_stdin_is_bounded():
    # GNU time reports the hook's own peak RSS (a child forked from pytest would count
    # pytest's pages in its high-water mark)
    p = subprocess.Popen(["/usr/bin/time", "-f", "maxrss=%M"] + nvbind_cmd() + ["hook", "precreate"],
                         stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env={"PATH": "/usr/bin:/bin", "NVBIND_LOG": "off"})
    t0 = time.monotonic()
    block = b" " * (1 << 20)
    try:
        for _ in range(100):                 # 100 MiB
            p.stdin.write(block)
    except BrokenPipeError:
        pass
    p.wait(timeout=60)
    err = p.stderr.read().decode()
    assert time.monotonic() - t0 < 30
    assert "larger than" in err and p.stdout.read() == b""
    rss_kib = int(err.rsplit("maxrss=", 1)[1].split()[0])
    assert rss_kib < 80 * 1024            # never holds the 100 MiB


def test_slow_stdin_is_bounded():
    p = subprocess.Popen(nvbind_cmd() + ["hook", "precreate"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env={"PATH": "/usr/bin:/bin", "NVBIND_LOG": "off", "NVBIND_STDIN_TIMEOUT": "1"})
    t0 = time.monotonic()
    try:
        while p.poll() is None and time.monotonic() - t0 < 20:
            p.stdin.write(b" ")
            p.stdin.flush()
            time.sleep(0.05)
    except BrokenPipeError:
        pass
    rc = p.wait(timeout=20)
    assert rc == 2 and b"not complete after 1 s" in p.stderr.read()
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("data", [b'{"ociVersion":"1","id":"x","status":"weird","bundle":"/nonexistent"}',
                                  b'{"id":"x","bundle":"/x","pid":-1}', b'[]'])
def test_odd_states(data):
    r = run_nvbind(["hook", "createRuntime"], data)
    assert r.returncode == 2 and r.stderr.startswith(b"nvbind: error: ")
