"""The CLI contract through real processes: stdin/stdout, exit codes, one-line errors."""
import json
import os

import pytest

from conftest import REPO, base_config, run_nvbind


def precreate(root, cfg):
    text = cfg if isinstance(cfg, (str, bytes)) else json.dumps(cfg)
    return run_nvbind(["--root", root, "hook", "precreate"], text)


def test_no_request_is_byte_identical(sim_root):
    text = json.dumps(base_config(), indent=3) + "\n\n"
    r = precreate(sim_root, text)
    assert r.returncode == 0 and r.stderr == b""
    assert r.stdout == text.encode()


def test_gpu_request_validates_against_oci_schema(sim_root, oci_validator):
    cfg = base_config(env=["NVIDIA_VISIBLE_DEVICES=1"])
    r = precreate(sim_root, cfg)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    errors = sorted(oci_validator.iter_errors(out), key=str)
    assert not errors, errors[0]
    devs = {d["path"]: d for d in out["linux"]["devices"]}
    assert devs["/dev/nvidia1"]["major"] == 195 and devs["/dev/nvidia1"]["minor"] == 1
    assert "/dev/nvidia0" not in devs
    rules = out["linux"]["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}       # the deny-all stays first
    assert {"allow": True, "type": "c", "major": 195, "minor": 1, "access": "rw"} in rules
    hooks = out["hooks"]["createContainer"]
    assert len(hooks) == 1 and hooks[0]["env"] == ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
    assert os.path.isabs(hooks[0]["path"])
    env = out["process"]["env"]
    assert len({e.split("=")[0] for e in env}) == len(env)      # no duplicate keys
    assert any(e.startswith("NVBIND_GPUS=GPU-") for e in env)


def test_user_env_wins_and_is_reported(sim_root):
    """The container's own env wins, except nvbind's markers and the admin's CUDA_MPS_*."""
    cfg = base_config(env=["NVIDIA_VISIBLE_DEVICES=0", "NVBIND_GPUS=mine", "NVBIND_GPUS=again",
                           "CUDA_CACHE_MAXSIZE=1", "NVBIND_PROFILE=ai-ml"])
    r = precreate(sim_root, cfg)
    env = json.loads(r.stdout)["process"]["env"]
    assert [e for e in env if e.startswith("NVBIND_GPUS=")] == [
        next(e for e in env if e.startswith("NVBIND_GPUS=GPU-"))]
    assert "CUDA_CACHE_MAXSIZE=1" in env and "NVBIND_PROFILE=ai-ml" in env
    assert b"env NVBIND_GPUS: replaced the container's value (policy)" in r.stderr
    assert b"env CUDA_CACHE_MAXSIZE: set by the container, kept its value" in r.stderr
    assert b"NVBIND_PROFILE" not in r.stderr          # same value: nothing to say


def test_same_input_same_bytes(sim_root):
    cfg = base_config(env=["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_DRIVER_CAPABILITIES=all"])
    assert precreate(sim_root, cfg).stdout == precreate(sim_root, cfg).stdout


@pytest.mark.parametrize("stdin, words", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    (json.dumps({"root": {"path": "rootfs"}}), "process: missing"),
    (json.dumps({"process": {"env": []}}), "root: missing"),
    (json.dumps(base_config(env=["NVIDIA_VISIBLE_DEVICES=9"])), "unknown device '9'"),
    (json.dumps(base_config(env=["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_DRIVER_CAPABILITIES=warp"])),
     "unknown capability 'warp'"),
    (b"\xff\xfe", "not UTF-8"),
])
def test_bad_input(sim_root, stdin, words):
    r = precreate(sim_root, stdin)
    assert r.returncode == 2
    assert r.stdout == b""
    lines = r.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nvbind: error: ") and words in lines[0]


def test_unknown_verb_and_stage():
    for args in (["frobnicate"], ["hook", "nosuchstage"], ["plan"]):
        r = run_nvbind(args)
        assert r.returncode == 2 and r.stderr.decode().startswith("nvbind: error: ")


def test_version():
    r = run_nvbind(["--version"])
    assert r.returncode == 0 and r.stdout.startswith(b"nvbind ")


def test_plan_example_bundle(sim_root):
    r = run_nvbind(["--root", sim_root, "plan", "--bundle", os.path.join(REPO, "examples/bundle"),
                    "--json"])
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    assert p["request"]["devices"] == ["1"]
    assert all(d["reason"] for d in p["edits"]["devices"] + p["edits"]["mounts"])
    assert any("not found" in s["reason"] for s in p["host"]["skipped"])
    text = run_nvbind(["--root", sim_root, "plan", "--bundle", os.path.join(REPO, "examples/bundle")])
    assert b"/dev/nvidia1" in text.stdout and b"ld cache folders" in text.stdout


def test_info_json(sim_root):
    r = run_nvbind(["--root", sim_root, "info", "--json"])
    inv = json.loads(r.stdout)
    assert inv["driver_version"] == "550.54.14" and len(inv["gpus"]) == 2
    assert inv["backend"] == "procfs"
    r = run_nvbind(["--root", sim_root, "info"])
    assert b"GPU-" in r.stdout and b"/dev/nvidiactl" in r.stdout


def _schema(name):
    import jsonschema
    with open(os.path.join(REPO, "schemas", name)) as f:
        return jsonschema.Draft202012Validator(json.load(f))


def test_plan_and_info_match_their_schemas(sim_root):
    plan_v, inv_v = _schema("plan.schema.json"), _schema("inventory.schema.json")
    for env in ("NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_VISIBLE_DEVICES=0:1", "NVIDIA_VISIBLE_DEVICES=none"):
        import tempfile
        with tempfile.TemporaryDirectory() as b:
            with open(os.path.join(b, "config.json"), "w") as f:
                json.dump(base_config(env=[env, "NVIDIA_DRIVER_CAPABILITIES=all"]), f)
            r = run_nvbind(["--root", sim_root, "plan", "--bundle", b, "--json"])
            assert r.returncode == 0, r.stderr
            errors = list(plan_v.iter_errors(json.loads(r.stdout)))
            assert not errors, errors[0]
    r = run_nvbind(["--root", sim_root, "info", "--json"])
    errors = list(inv_v.iter_errors(json.loads(r.stdout)))
    assert not errors, errors[0]


@pytest.mark.parametrize("name, stage", [("50-nvbind-precreate.json", "precreate"),
                                         ("50-nvbind-oci.json", "createRuntime"),
                                         ("50-nvbind-poststop.json", "poststop")])
def test_packaged_hooks_d_files_have_env_and_timeout(name, stage):
    with open(os.path.join(REPO, "packaging/hooks.d", name)) as f:
        h = json.load(f)
    assert h["version"] == "1.0.0" and h["stages"] == [stage]
    assert h["hook"]["env"] and all("=" in e for e in h["hook"]["env"])
    assert h["hook"]["timeout"] > 0 and h["hook"]["args"][1:] == ["hook", stage]
    assert h["when"] == {"always": True}


def test_log_line_fields(sim_root, tmp_path):
    log = tmp_path / "nvbind.log"
    cfg = json.dumps(base_config(env=["NVIDIA_VISIBLE_DEVICES=1"]))
    r = run_nvbind(["--root", sim_root, "hook", "precreate"], cfg, env={"NVBIND_LOG": str(log)})
    assert r.returncode == 0
    run_nvbind(["--root", sim_root, "hook", "precreate"], "{", env={"NVBIND_LOG": str(log)})
    ok, bad = [json.loads(line) for line in log.read_text().splitlines()]
    assert {"time", "stage", "devices", "gpus", "profile", "duration_ms", "outcome"} <= set(ok)
    assert ok["outcome"] == "ok" and ok["profile"] == "default" and "/dev/nvidia1" in ok["devices"]
    assert bad["outcome"] == "error" and "not valid JSON" in bad["error"]


def test_unwritable_log_does_not_change_the_decision(sim_root, tmp_path):
    cfg = json.dumps(base_config(env=["NVIDIA_VISIBLE_DEVICES=1"]))
    r = run_nvbind(["--root", sim_root, "hook", "precreate"], cfg,
                   env={"NVBIND_LOG": str(tmp_path / "no-such-dir" / "log")})
    assert r.returncode == 0 and json.loads(r.stdout)["linux"]["devices"]
    assert b"cannot write log" in r.stderr


def test_log_level_error_keeps_failures_only(sim_root, tmp_path):
    log = tmp_path / "nvbind.log"
    conf = tmp_path / "config.toml"
    conf.write_text('log_level = "error"\n')
    env = {"NVBIND_LOG": str(log), "NVBIND_CACHE_DIR": str(tmp_path / "c")}
    ok = json.dumps(base_config(env=["NVIDIA_VISIBLE_DEVICES=1"]))
    bad = json.dumps(base_config(env=["NVIDIA_VISIBLE_DEVICES=9"]))
    assert run_nvbind(["--root", sim_root, "--config", str(conf), "hook", "precreate"], ok, env=env).returncode == 0
    assert not log.exists()
    assert run_nvbind(["--root", sim_root, "--config", str(conf), "hook", "precreate"], bad, env=env).returncode == 2
    (entry,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert entry["outcome"] == "error"


# ---- `cdi generate` without argparse: the same namespace as argparse, or argparse decides
def _both(rest):
    from nvbind import admin
    from nvbind.admin.args import parser
    fast = admin._cdi_generate(rest)
    try:
        slow = vars(parser("cdi").parse_args(["cdi", *rest]))
    except (Exception, SystemExit) as e:  # noqa: BLE001 - argparse refuses or helps
        slow = type(e).__name__
    return fast, slow


@pytest.mark.parametrize("rest", [
    ["generate"],
    ["generate", "--output", "/etc/cdi/nvidia.yaml"],
    ["generate", "--output=/run/cdi/nvidia.json", "--format", "json"],
    ["generate", "--format=yaml", "--capabilities", "all", "--watch", "30"],
    ["generate", "--watch=0.5", "--output", "a", "--output", "b"],     # the last one wins
    ["generate", "--capabilities="],
])
def test_cdi_generate_fast_path_is_argparse(rest):
    fast, slow = _both(rest)
    assert fast is not None, rest
    assert vars(fast) == slow


@pytest.mark.parametrize("rest", [
    ["generate", "--help"], ["generate", "-h"], ["generate", "--out", "x"],   # abbreviation
    ["generate", "--format", "xml"], ["generate", "--watch", "soon"], ["generate", "--output"],
    ["generate", "--output", "--format"], ["generate", "extra"], ["list"], ["validate", "f"],
    ["generate", "--bogus=1"],
])
def test_cdi_generate_anything_else_goes_to_argparse(rest):
    from nvbind import admin
    assert admin._cdi_generate(rest) is None


def test_cdi_generate_fast_path_fuzzed_against_argparse():
    from hypothesis import given, settings, strategies as st
    words = st.sampled_from(["generate", "--output", "--format", "--capabilities", "--watch",
                             "json", "yaml", "xml", "1.5", "-2", "x", "", "--output=", "--watch=3",
                             "--format=yaml", "--out", "-h"])

    @settings(max_examples=2000, deadline=None, derandomize=True, database=None)
    @given(st.lists(words, max_size=7))
    def check(tail):
        rest = ["generate", *tail]
        fast, slow = _both(rest)
        if fast is not None:
            assert vars(fast) == slow, rest
    check()


def test_admin_verbs_turn_the_collector_back_on(sim_root, tmp_path, monkeypatch, capsys):
    """The frozen entry turns the cyclic garbage collector off for the short hook and shim
    processes (nvbind/frozen.py); an admin verb, which may serve for days (metrics
    --listen, device-plugin), runs with it on again."""
    import gc

    from nvbind import cli
    monkeypatch.setenv("NVBIND_CACHE_DIR", str(tmp_path))
    gc.disable()
    try:
        assert cli.run(["--root", sim_root, "info", "--json"]) == 0
        assert gc.isenabled()
    finally:
        gc.enable()
    assert json.loads(capsys.readouterr().out)["driver_version"]


def test_a_child_with_imports_closed_loads_no_module_from_a_file(tmp_path):
    """sysio.child.imports_closed, which the live injection's child calls before it joins
    the container's mount namespace: a module file on the path (here: planted first on
    it) is not loaded; built-in modules and those already loaded still are."""
    import subprocess
    import sys
    (tmp_path / "planted.py").write_text("open(__file__ + '.ran', 'w')\n")
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "from nvbind.sysio import child; child.imports_closed()\n"
            "import _signal, os  # built-in, and loaded before\n"
            "try:\n    import planted\nexcept ImportError:\n    print('refused')\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                       env={"PYTHONPATH": os.path.join(REPO, "hook")}, timeout=60)
    assert r.returncode == 0 and r.stdout == "refused\n", r.stderr
    assert not (tmp_path / "planted.py.ran").exists()
    # and the planted module is real: without imports_closed it runs
    r = subprocess.run([sys.executable, "-c", code.replace("child.imports_closed()", "pass"),
                        str(tmp_path)], capture_output=True, text=True,
                       env={"PYTHONPATH": os.path.join(REPO, "hook")}, timeout=60)
    assert (tmp_path / "planted.py.ran").exists(), r.stderr
