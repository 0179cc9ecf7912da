"""fastjson reads as strictly as the engines' Go decoder: case-folded or repeated keys, NaN,
Infinity, out-of-range numbers and lone surrogates are refused; everything else reads
exactly as the standard library reads it; output is ASCII-only, valid JSON. (issue 13, 5)"""
import json
import os
import subprocess
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import base_config, run_nvbind
from nvbind import fastjson, oci

MANY = settings(max_examples=3000, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


def _orbits():
    """Unicode simple case-fold orbits (what Go's unicode.SimpleFold walks), built from the
    single-rune case mappings of every code point: rune -> smallest member of its orbit."""
    parent = {}

    def find(c):
        while parent.get(c, c) != c:
            c = parent[c]
        return c

    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        c = chr(cp)
        for m in (c.lower(), c.upper(), c.title()):
            if len(m) == 1 and m != c:
                a, b = find(c), find(m)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return {c: find(c) for c in list(parent)}


ORBIT = _orbits()
FOLDING = sorted(ORBIT)      # every rune that has a case partner


def go_equal_fold(a: str, b: str) -> bool:
    """bytes.EqualFold as the Go documentation defines it: equal under simple Unicode
    case folding, rune by rune."""
    return len(a) == len(b) and all(ORBIT.get(x, x) == ORBIT.get(y, y) for x, y in zip(a, b))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=10)
keys = st.text(st.sampled_from(FOLDING[:400] + list("kKsSaA\u212a\u017f")), min_size=1, max_size=3)


def _has_collision(v) -> bool:
    if isinstance(v, dict):
        ks = list(v)
        if any(go_equal_fold(a, b) for i, a in enumerate(ks) for b in ks[i + 1:]):
            return True
        return any(_has_collision(x) for x in v.values())
    if isinstance(v, list):
        return any(_has_collision(x) for x in v)
    return False


@MANY
@given(json_values)
def test_reads_as_the_standard_library(v):
    text = json.dumps(v)
    if _has_collision(v):
        with pytest.raises(ValueError, match="differ only in case"):
            fastjson.loads(text)
    else:
        assert fastjson.loads(text) == json.loads(text)
    out = fastjson.dumps(v)
    assert out.isascii() and json.loads(out) == v


@MANY
@given(st.text(max_size=60))
def test_arbitrary_text_never_read_more_loosely(text):
    try:
        ref = json.loads(text)
    except (ValueError, RecursionError):
        ref = ValueError
    try:
        got = fastjson.loads(text)
    except (ValueError, RecursionError):
        got = ValueError
    if ref is ValueError:
        assert got is ValueError
    elif got is not ValueError:
        assert got == ref or got != got


@MANY
@given(st.lists(keys, min_size=2, max_size=4, unique=True))
def test_case_folding_matches_go(names):
    """Two keys are refused exactly when Go's decoder would take them for one field."""
    text = "{" + ",".join(f"{json.dumps(k)}:{i}" for i, k in enumerate(names)) + "}"
    collide = any(go_equal_fold(a, b) for i, a in enumerate(names) for b in names[i + 1:])
    if collide:
        with pytest.raises(ValueError):
            fastjson.loads(text)
    else:
        assert fastjson.loads(text) == {k: i for i, k in enumerate(names)}


@pytest.mark.parametrize("text,why", [
    ('{"a":1,"a":2}', "twice"), ('{"process":{},"Process":{}}', "differ only in case"),
    ('{"k":1,"\\u212a":2}', "differ only in case"), ('{"s":1,"\u017f":2}', "differ only in case"),
    ("[NaN]", "NaN"), ("[Infinity]", "Infinity"), ("[-Infinity]", "Infinity"),
    ("[1e400]", "out of range"), ('["\\ud800"]', "surrogate"), ('{"\\udfff":1}', "surrogate"),
    ('["\\udc00\\ud800"]', "surrogate"),
])
def test_refused(text, why):
    with pytest.raises(ValueError, match=why):
        fastjson.loads(text)


def test_pairs_are_fine():
    assert fastjson.loads('["\\ud83d\\ude00"]') == ["\U0001F600"]
    assert fastjson.loads('{"a":{"a":1},"b":{"a":2}}') == {"a": {"a": 1}, "b": {"a": 2}}
    with pytest.raises(ValueError):
        fastjson.dumps([float("nan")])
    assert fastjson.dumps({"\u00e9": "\U0001F600"}) == '{"\\u00e9":"\\ud83d\\ude00"}'


def test_escaped_slash_is_not_missed(sim_root):
    """`"nvbind.io\\/gpus"` is the annotation nvbind.io/gpus: the fast path must not skip it."""
    text = json.dumps(base_config(annotations={"nvbind.io/gpus": "1"})).replace(
        "nvbind.io/gpus", "nvbind.io\\/gpus")
    assert "nvbind.io/" not in text and oci.may_request(text)
    r = run_nvbind(["--root", sim_root, "hook", "precreate"], text)
    assert r.returncode == 0, r.stderr
    assert "/dev/nvidia1" in [d["path"] for d in json.loads(r.stdout)["linux"]["devices"]]


@pytest.mark.parametrize("mutate", ["Process", "nan", "surrogate"])
def test_precreate_refuses_with_exit_2(sim_root, mutate):
    cfg = json.dumps(base_config(env=["NVIDIA_VISIBLE_DEVICES=1"]))
    if mutate == "Process":
        text = cfg[:-1] + ',"Process":{"cwd":"/","args":["sh"],"env":[]}}'
    elif mutate == "nan":
        text = cfg[:-1] + ',"x":NaN}'
    else:
        text = cfg[:-1] + ',"x":"\\ud800"}'
    r = run_nvbind(["--root", sim_root, "--log", "off", "hook", "precreate"], text)
    assert r.returncode == 2 and r.stdout == b"", r.stderr
    assert r.stderr.startswith(b"nvbind: error: config.json on stdin is not valid JSON")


def test_runc_really_takes_the_last_case_folded_key(live_env, tmp_path):
    """The rule is Go's, seen through the real runc: of `process` and `Process`, the last
    one runs. And nvbind's createRuntime door refuses such a bundle (exit 2)."""
    import engines
    _, image = live_env
    bundle = engines.make_bundle(str(tmp_path / "b"), image, ["echo", "LOWER"])
    cfg = json.load(open(f"{bundle}/config.json"))
    upper = dict(cfg["process"], args=["echo", "UPPER"])
    text = json.dumps(cfg)[:-1] + ',"Process":' + json.dumps(upper) + "}"
    open(f"{bundle}/config.json", "w").write(text)
    r = engines.run_bundle(bundle, f"fold-{os.getpid()}")
    assert r.returncode == 0 and r.stdout.strip() == "UPPER", (r.stdout, r.stderr)
    state = json.dumps({"ociVersion": "1.0.2", "id": "x", "pid": os.getpid(), "bundle": bundle})
    r = run_nvbind(["--log", "off", "hook", "createRuntime"], state)
    assert r.returncode == 2 and b"differ only in case" in r.stderr, r.stderr


def test_fold_agrees_with_the_orbits_on_every_rune():
    """go_fold against the orbit table, exhaustively over every rune with a case partner."""
    by_fold = {}
    for c in FOLDING:
        by_fold.setdefault(fastjson.go_fold(c), set()).add(ORBIT[c])
    bad = {f: o for f, o in by_fold.items() if len(o) != 1}
    assert not bad, list(bad.items())[:5]
    reps = {}
    for c in FOLDING:
        reps.setdefault(ORBIT[c], set()).add(fastjson.go_fold(c))
    split = {o: f for o, f in reps.items() if len(f) != 1}
    assert not split, list(split.items())[:5]
