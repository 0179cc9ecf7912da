"""The Kubernetes manifests against the Kubernetes API's own types (the `kubernetes`
Python client's models, generated from the API's OpenAPI schema): each manifest must
deserialize into its kind and serialize back to exactly itself, so a misspelt or unknown
field (dropped by the models) or a wrong type (refused by them) fails."""
import json
import os

import pytest

from conftest import REPO

K8S = os.path.join(REPO, "packaging", "kubernetes")


def roundtrip(name, kind):
    from kubernetes import client
    api = client.ApiClient()
    with open(os.path.join(K8S, name)) as f:
        data = json.load(f)
    obj = api.deserialize(json.dumps(data), kind, "application/json")
    return data, api.sanitize_for_serialization(obj)


@pytest.mark.parametrize("name,kind", [("daemonset.json", "V1DaemonSet"),
                                       ("runtimeclass.json", "V1RuntimeClass")])
def test_manifest_is_exactly_its_kind(name, kind):
    data, back = roundtrip(name, kind)
    assert back == data


def test_the_check_catches_unknown_fields_and_wrong_types(tmp_path):
    from kubernetes import client
    api = client.ApiClient()
    with open(os.path.join(K8S, "daemonset.json")) as f:
        data = json.load(f)
    c = data["spec"]["template"]["spec"]["containers"][0]
    c["volumeMount"] = c.pop("volumeMounts")
    back = api.sanitize_for_serialization(api.deserialize(json.dumps(data), "V1DaemonSet",
                                                          "application/json"))
    assert back != data
    c["args"] = "not a list"
    with pytest.raises(Exception):
        api.deserialize(json.dumps(data), "V1DaemonSet", "application/json")


def test_cdi_generate_host_paths(sim_root, tmp_path):
    """As the DaemonSet runs it: the node's / at --root, the spec for the node's runtime.
    A spec never carries the --root prefix: it is always for the host that root is."""
    from conftest import run_nvbind
    out = tmp_path / "host-run" / "cdi" / "nvidia.json"        # directory made on demand
    log = os.path.join(sim_root, "var/log/nvbind.log")
    r = run_nvbind(["--root", sim_root, "--log", log, "cdi", "generate", "--output", str(out)])
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert sim_root not in text                                 # nothing names the mount point
    spec = json.loads(text)
    nodes = [n for d in spec["devices"] for n in d["containerEdits"].get("deviceNodes", [])]
    assert nodes and all(n.get("hostPath", n["path"]) == n["path"] for n in nodes)
    for h in spec["containerEdits"].get("hooks", []):
        assert "--root" not in h["args"] and "/var/log/nvbind.log" in h["args"]
    r = run_nvbind(["--root", sim_root, "cdi", "generate"])
    assert r.returncode == 0 and sim_root not in r.stdout.decode()
