"""Every bad value is a clean refusal (issue 13, 6): hypothesis over config shapes through
the whole `hook precreate` and `hook createRuntime` entry points (in-process: nvbind.cli.main
with stdin from a file), asserting exit 0 or 2, never an `internal:` error, and stdout
either empty or valid, ASCII-only JSON. Log lines stay bounded."""
import contextlib
import io
import json
import os
import shutil
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import base_config
from nvbind import cli

SOME = settings(max_examples=600, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))

weird = st.sampled_from(["nan", "NaN", "inf", "-1", "1e400", "0", "1", "all", "none", "void", "",
                         "12GB", "1G", "0:0", "1:0", "9", "GPU-x", "exclusive", "virtual", "shared",
                         "compute,utility", "bogus", "\ud800", "x" * 5000, "0,0,1", " 1 ",
                         "default", "ai-ml", "nope", "MIG-x", "00000000:11:00.0"])
text = st.one_of(weird, st.text(max_size=12))
any_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | text,
                        lambda i: st.lists(i, max_size=3) | st.dictionaries(text, i, max_size=3),
                        max_leaves=6)
env_keys = st.sampled_from(["NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "CUDA_VERSION",
                            "NVIDIA_REQUIRE_CUDA", "NVIDIA_DISABLE_REQUIRE", "NVBIND_PROFILE",
                            "NVIDIA_MIG_CONFIG_DEVICES", "PATH"])
ann_keys = st.sampled_from(["nvbind.io/gpus", "nvbind.io/capabilities", "nvbind.io/isolation",
                            "nvbind.io/memory-limit", "nvbind.io/profile", "nvbind.io/injected",
                            "io.kubernetes.cri.container-type"])


@st.composite
def configs(draw):
    cfg = base_config(env=[f"{k}={v}" for k, v in draw(st.dictionaries(env_keys, text, max_size=4)).items()],
                      annotations=draw(st.dictionaries(ann_keys, text, max_size=4)))
    for key in draw(st.lists(st.sampled_from(["linux", "linux.resources", "linux.devices",
                                              "hostname", "mounts", "process.capabilities",
                                              "annotations", "process.env", "root"]), max_size=3)):
        path = key.split(".")
        obj = cfg
        for p in path[:-1]:
            obj = obj.setdefault(p, {}) if isinstance(obj.get(p, {}), dict) else {}
        obj[path[-1]] = draw(any_json)
    return cfg


def run(argv, stdin: str, tmp):
    f = tmp / "stdin"
    f.write_text(stdin, errors="surrogatepass")
    out, err = io.StringIO(), io.StringIO()
    with open(f, "rb") as raw, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        old = sys.stdin
        sys.stdin = io.TextIOWrapper(raw)
        try:
            rc = cli.main(argv)
        finally:
            sys.stdin = old
    return rc, out.getvalue(), err.getvalue()


def check(rc, out, err, log):
    assert rc in (0, 2), (rc, err)
    assert "internal:" not in err, err
    if rc == 2:
        assert err.startswith("nvbind: error: ") and out == "", (err, out)
    if out:
        assert out.isascii() or json.loads(out) is not None
        json.loads(out)
    if os.path.exists(log):
        for line in open(log):
            assert len(line) < 16384, len(line)
        os.unlink(log)


@pytest.fixture(scope="module")
def world(tmp_path_factory, sim_root):
    d = tmp_path_factory.mktemp("fuzz")
    (d / "config.toml").write_text(f'lease_dir = "{d}/leases"\ncache_dir = "{d}/cache"\n')
    os.environ.setdefault("NVBIND_CACHE_DIR", str(d / "cache"))
    return d, ["--root", sim_root, "--config", str(d / "config.toml"), "--log", str(d / "log")]


@SOME
@given(configs())
def test_precreate(world, cfg):
    d, g = world
    text = json.dumps(cfg, ensure_ascii=False)
    check(*run(g + ["hook", "precreate"], text, d), str(d / "log"))


@SOME
@given(configs(), st.lists(text, max_size=2))
def test_create_runtime(world, monkeypatch_session, cfg, leases):
    """createRuntime decides on the bundle's config.json. The injection into a running
    container (apply.live.apply, which needs a real container's pid) is replaced by a
    recorder: what is fuzzed here is everything before it."""
    d, g = world
    bundle = d / "bundle"
    bundle.mkdir(exist_ok=True)
    (bundle / "config.json").write_text(json.dumps(cfg, ensure_ascii=False), errors="surrogatepass")
    args = []
    for k in leases:
        args += ["--lease", k]
    state = json.dumps({"ociVersion": "1.0.2", "id": "fuzz", "pid": os.getpid(), "bundle": str(bundle)})
    check(*run(g + ["hook", "createRuntime", *args], state, d), str(d / "log"))
    shutil.rmtree(d / "leases", ignore_errors=True)


@pytest.fixture(scope="module")
def monkeypatch_session():
    from nvbind.apply import live
    mp = pytest.MonkeyPatch()
    mp.setattr(live, "apply", lambda *a, **k: ["(not applied: fuzz)"])
    yield mp
    mp.undo()


@pytest.mark.parametrize("ann,expect", [
    ({"nvbind.io/memory-limit": "nan"}, "nvbind.io/memory-limit"),
    ({"nvbind.io/memory-limit": "1e400"}, "nvbind.io/memory-limit"),
    ({"nvbind.io/memory-limit": "inf"}, "nvbind.io/memory-limit"),
])
def test_named_bad_values(world, ann, expect):
    d, g = world
    cfg = base_config(env=["NVIDIA_VISIBLE_DEVICES=1"], annotations=ann)
    rc, out, err = run(g + ["hook", "precreate"], json.dumps(cfg), d)
    assert rc == 2 and err.startswith("nvbind: error: ") and expect in err, err


def test_resources_null(world):
    d, g = world
    cfg = base_config(env=["NVIDIA_VISIBLE_DEVICES=1"])
    cfg["linux"]["resources"] = None
    rc, out, err = run(g + ["hook", "precreate"], json.dumps(cfg), d)
    assert rc in (0, 2) and "internal" not in err, err
    if rc == 0:
        json.loads(out)


def test_log_lines_are_bounded(world):
    d, g = world
    cfg = base_config(env=["NVIDIA_VISIBLE_DEVICES=9"])
    cfg["hostname"] = "h" * 130_000
    for _ in range(3):
        rc, out, err = run(g + ["hook", "precreate"], json.dumps(cfg), d)
        assert rc == 2
    assert os.path.getsize(d / "log") < 3 * 16384
    os.unlink(d / "log")


states = st.fixed_dictionaries({"id": text, "bundle": st.one_of(text, st.just("/a\0b"), st.just("/tmp"))},
                               optional={"pid": any_json, "annotations": any_json, "status": any_json})


@SOME
@given(st.one_of(states.map(json.dumps), any_json.map(json.dumps), text),
       st.sampled_from(["createRuntime", "poststop", "createContainer"]))
def test_state_shapes(world, monkeypatch_session, state, stage):
    d, g = world
    args = ["--lease", "GPU-1"] if stage == "createRuntime" else []
    rc, out, err = run(g + ["hook", stage, *args], state, d)
    check(rc, out, err, str(d / "log"))
