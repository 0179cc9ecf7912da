import copy
import json
import os

import pytest

from conftest import REPO, SHARED, decide_edits, needs_shared, run_nvbind
from nvbind.settings import Settings
from nvbind.core import edits, profiles
from nvbind.cdi import generate, io, validate as cdi
from nvbind.host import inventory
from nvbind.core.request import from_config

HOOK = ("/usr/local/bin/nvbind", "nvbind")
CAPS = ("compute", "utility")


@pytest.fixture(scope="module")
def spec(sim_root):
    return generate.generate(Settings([], config={}), inventory.build(sim_root), CAPS, HOOK)


def test_generated_spec_is_valid_and_minimal_version(spec):
    assert cdi.validate(spec) == []
    # digits-first names and hostPath need 0.5.0; nothing needs more
    assert spec["cdiVersion"] == "0.5.0"
    assert spec["kind"] == "nvidia.com/gpu"


def test_device_names(spec, sim_root):
    inv = inventory.build(sim_root)
    names = [d["name"] for d in spec["devices"]]
    assert names[-1] == "all"
    assert {"0", "1", inv.gpus[0].uuid, inv.gpus[1].uuid, "0:0", "0:1"} <= set(names)


def test_edits_equal_precreate(spec, sim_root):
    """Top-level + device 1's edits == what precreate injects for NVIDIA_VISIBLE_DEVICES=1."""
    inv = inventory.build(sim_root)
    ed = decide_edits(inv, {"NVIDIA_VISIBLE_DEVICES": "1"}, hook=HOOK)
    top = spec["containerEdits"]
    dev = next(d for d in spec["devices"] if d["name"] == "1")["containerEdits"]
    nodes = {(n["path"], n["major"], n["minor"]) for n in top["deviceNodes"] + dev["deviceNodes"]}
    assert nodes == {(d.path, d.major, d.minor) for d in ed.devices}
    # the spec is for the host sim_root is: host paths without the root prefix (issue 12)
    assert [(m["hostPath"], m["containerPath"], tuple(m["options"])) for m in top["mounts"]] == \
        [(m.source.removeprefix(sim_root), m.destination, m.options) for m in ed.mounts]
    def no_use(args):   # precreate registers the shared GPU user (--use KEY); a CDI spec cannot
        out, it = [], iter(args)
        for a in it:
            if a == "--use":
                next(it)
            else:
                out.append(a)
        return tuple(out)
    assert any("--use" in h.args for h in ed.hooks)
    assert [(h["path"], tuple(h["args"]), tuple(h["env"])) for h in top["hooks"]] == \
        [(h.path, no_use(h.args), h.env) for h in ed.hooks]
    assert all(h["env"] for h in top["hooks"])


@needs_shared
def test_reference_fixtures():
    base = os.path.join(SHARED, "cdi", "testdata")
    for name in ("minimal.json", "spec-example.json"):
        with open(os.path.join(base, "good", name)) as f:
            assert cdi.validate(json.load(f)) == [], name
    with open(os.path.join(base, "bad", "explicit-empty.json")) as f:
        assert cdi.validate(json.load(f))


@needs_shared
def test_shipped_schema_is_the_official_one():
    for name in ("schema.json", "defs.json"):
        with open(os.path.join(SHARED, "cdi", "schema", name), "rb") as a, \
                open(os.path.join(REPO, "hook/nvbind/data/cdi", name), "rb") as b:
            assert a.read() == b.read()


def _mutate(spec, fn):
    s = copy.deepcopy(spec)
    fn(s)
    return cdi.validate(s)


@pytest.mark.parametrize("fn, words", [
    (lambda s: s.update(extra=1), "unknown field"),
    (lambda s: s["devices"][0].update(bogus=1), "unknown field"),
    (lambda s: s.update(cdiVersion="0.4.0"), "too low"),
    (lambda s: s.update(cdiVersion="0.9.0"), "not a known version"),
    (lambda s: s.update(kind="nvidia.com"), "vendor/class"),
    (lambda s: s.update(kind="nvidia.com/gpu/x"), "vendor/class"),
    (lambda s: s.update(devices=[]), "at least one device"),
    (lambda s: s["devices"].append(copy.deepcopy(s["devices"][0])), "duplicate device name"),
    (lambda s: s["devices"][0].update(name="-bad"), "device name"),
    (lambda s: s["devices"][0].update(containerEdits={}), "containerEdits is empty"),
    (lambda s: s["containerEdits"]["hooks"][0].update(hookName="preStart"), "hookName"),
    (lambda s: s["containerEdits"]["hooks"][0].update(env=["=x"]), "KEY=VALUE"),
    (lambda s: s["containerEdits"].update(env=["NOVALUE"]), "KEY=VALUE"),
    (lambda s: s["devices"][0]["containerEdits"]["deviceNodes"][0].update(type="x"), "type"),
    (lambda s: s["devices"][0]["containerEdits"]["deviceNodes"][0].update(permissions="rx"), "permissions"),
    (lambda s: s["containerEdits"]["mounts"][0].update(hostPath=""), "non-empty"),
    (lambda s: s.update(annotations={"bad key!": "v"}, cdiVersion="0.6.0"), "annotation"),
    (lambda s: s["containerEdits"].update(netDevices=[{"hostInterfaceName": "", "name": "e"}],
                                           ), "non-empty"),
    (lambda s: s.update(cdiVersion=3), "schema"),
    (lambda s: s["devices"][0]["containerEdits"]["deviceNodes"][0].update(major=-1), "major -1 is negative"),
    (lambda s: s["devices"][0]["containerEdits"]["deviceNodes"][0].update(minor=-1), "minor -1 is negative"),
    (lambda s: s["containerEdits"]["hooks"][0].update(path=""), "path is empty"),
])
def test_rules_the_schema_misses(spec, fn, words):
    errors = _mutate(spec, fn)
    assert any(words in e for e in errors), errors


def test_min_version_rules():
    base = {"kind": "a.b/c", "devices": [{"name": "x", "containerEdits": {"env": ["A=1"]}}]}
    assert generate.min_version(base) == "0.3.0"
    assert generate.min_version({**base, "kind": "a.b/c.d"}) == "0.6.0"
    s = copy.deepcopy(base)
    s["devices"][0]["containerEdits"]["mounts"] = [{"hostPath": "/a", "containerPath": "/a", "type": "bind"}]
    assert generate.min_version(s) == "0.4.0"
    s["devices"][0]["containerEdits"]["additionalGids"] = [5]
    assert generate.min_version(s) == "0.7.0"
    s["containerEdits"] = {"netDevices": [{"hostInterfaceName": "a", "name": "b"}]}
    assert generate.min_version(s) == "1.1.0"


def test_yaml_round_trip(spec, tmp_path):
    """YAML is written and read by PyYAML; what is read back is the spec, and it validates."""
    import yaml
    path = tmp_path / "nvidia.yaml"
    path.write_text(io.dumps(spec, "yaml"))
    assert yaml.safe_load(path.read_text()) == spec == io.load(str(path))
    assert cdi.validate(io.load(str(path))) == []
    path.write_text("cdiVersion: [unclosed")
    with pytest.raises(Exception, match="not valid YAML"):
        io.load(str(path))


def test_cli_generate_validate_list(sim_root, tmp_path):
    out = tmp_path / "specs" / "nvidia.json"
    out.parent.mkdir()
    r = run_nvbind(["--root", sim_root, "cdi", "generate", "--output", str(out)])
    assert r.returncode == 0, r.stderr
    assert run_nvbind(["cdi", "validate", str(out)]).returncode == 0
    r = run_nvbind(["cdi", "list", "--spec-dir", str(out.parent)])
    assert b"nvidia.com/gpu=1\n" in r.stdout and b"nvidia.com/gpu=all\n" in r.stdout
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    r = run_nvbind(["cdi", "validate", str(bad)])
    assert r.returncode == 2 and b"required property" in r.stdout
    r = run_nvbind(["--root", sim_root, "cdi", "generate", "--format", "yaml"])
    assert r.stdout.startswith(b'cdiVersion: 0.5.0\n')
