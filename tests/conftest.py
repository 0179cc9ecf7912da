"""Shared fixtures: the simulated hosts, the reference data in ../shared, running nvbind."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared", "reference")
CTK = os.path.join(SHARED, "nvidia-ctk-testdata")
OCI_SCHEMA = os.path.join(SHARED, "oci-runtime-spec", "schema")
sys.path.insert(0, os.path.join(REPO, "tools"))
sys.path.insert(0, os.path.join(REPO, "hook"))

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (mknod for the simulated host)")
needs_shared = pytest.mark.skipif(not os.path.isdir(SHARED), reason=f"{SHARED} not present")


def tree(path):
    """Every entry under path with mode, size, mtime and link target: to prove 'unchanged'."""
    out = {}
    for d, dirs, files in os.walk(path):
        for n in dirs + files:
            p = os.path.join(d, n)
            st = os.lstat(p)
            out[p] = (st.st_mode, st.st_size, st.st_mtime_ns,
                      os.readlink(p) if os.path.islink(p) else None)
    return out


def mountinfo():
    """The host's mount table, without mount ids (to compare before and after)."""
    with open("/proc/self/mountinfo") as f:
        return sorted(" ".join(line.split()[3:]) for line in f)


def nvbind_cmd() -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "nvbind")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "nvbind"]


def run_nvbind(args, stdin: str | bytes = b"", env=None, timeout=60):
    data = stdin.encode() if isinstance(stdin, str) else stdin
    e = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "NVBIND_LOG": "off"}
    e.update(env or {})
    return subprocess.run(nvbind_cmd() + list(args), input=data, capture_output=True,
                          env=e, timeout=timeout)


@pytest.fixture(scope="session")
def sim_root(tmp_path_factory):
    """A 2-GPU simulated host (MIG on GPU 0, a stale libcuda.so.470 beside the real one)."""
    if not IS_ROOT:
        pytest.skip("needs root (mknod for the simulated host)")
    import simhost
    root = str(tmp_path_factory.mktemp("simhost") / "root")
    simhost.build(root, gpus=2, mig=True, version="550.54.14", stale=True)
    return root


@pytest.fixture(scope="session")
def oci_validator():
    if not os.path.isdir(OCI_SCHEMA):
        pytest.skip(f"{OCI_SCHEMA} not present")
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    def retrieve(uri: str):
        with open(uri.removeprefix("file://")) as f:
            return Resource.from_contents(json.load(f), default_specification=DRAFT4)

    with open(os.path.join(OCI_SCHEMA, "config-schema.json")) as f:
        schema = json.load(f)
    schema["id"] = "file://" + os.path.join(OCI_SCHEMA, "config-schema.json")
    return jsonschema.Draft4Validator(schema, registry=Registry(retrieve=retrieve))


def base_config(env=(), annotations=None) -> dict:
    """A config.json as `runc spec` writes it, with extra env."""
    return {
        "ociVersion": "1.0.2-dev",
        "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": ["sh"],
                    "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                            *env], "cwd": "/"},
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "runc",
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"resources": {"devices": [{"allow": False, "access": "rwm"}]},
                  "namespaces": [{"type": "pid"}, {"type": "mount"}]},
        **({"annotations": annotations} if annotations is not None else {}),
    }


def decide_edits(host, env, ann=None, config=None, cfg=None, hook=("/usr/local/bin/nvbind", "nvbind")):
    """The edits nvbind.decide gives a container with `env` and annotations `ann` (cfg: more
    of its config.json), under the configuration dict `config`, on `host` (an Inventory, or
    a callable taking the profile's devices)."""
    from nvbind import decide
    from nvbind.settings import Settings
    oci_cfg = base_config(env=[f"{k}={v}" for k, v in env.items()], annotations=ann or {})
    for k, v in (cfg or {}).items():
        oci_cfg[k] = {**oci_cfg.get(k, {}), **v} if isinstance(v, dict) else v
    from nvbind.core.edits import ContainerEdits
    d = decide.decide(Settings([], config=config or {}), oci_cfg, host, hook)
    return d.edits if d.edits is not None else ContainerEdits(notes=list(d.reasons))


def write_cdi_spec(root: str, path: str) -> dict:
    """`nvbind --root ROOT cdi generate --output PATH`, then the spec mapped onto where this
    machine sees the simulated host. The spec is for the host ROOT is, so it carries no root
    prefix (issue 12, checked here); a podman on *this* machine must find the nodes and
    files under ROOT."""
    r = run_nvbind(["--root", root, "cdi", "generate", "--output", path])
    assert r.returncode == 0, r.stderr
    with open(path) as f:
        spec = json.load(f)
    assert root not in json.dumps(spec)
    for e in [spec["containerEdits"]] + [d["containerEdits"] for d in spec["devices"]]:
        for m in e.get("mounts", []):
            m["hostPath"] = root + m["hostPath"]
        for n in e.get("deviceNodes", []):
            n["hostPath"] = root + n.get("hostPath", n["path"])
    with open(path, "w") as f:
        json.dump(spec, f)
    return spec


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def podman_env(tmp_path_factory):
    """(simulated host root, Podman) with nvbind registered as precreate hook via hooks.d."""
    import shutil
    if not IS_ROOT:
        pytest.skip("end-to-end tests run real containers: need root")
    for tool in ("podman", "runc", "gcc"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed (make setup installs it)")
    import engines
    state = str(tmp_path_factory.mktemp("podman"))
    root, pm = engines.prepare(state)
    yield root, pm
    subprocess.run(pm.base() + ["system", "reset", "--force"], capture_output=True)
    import daemons
    daemons.unmount_under(state)    # reset leaves storage/overlay mounted


def _need_engines(*tools):
    import shutil
    if not IS_ROOT:
        pytest.skip("end-to-end tests run real containers: need root")
    for tool in tools:
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed (make setup installs it)")


@pytest.fixture(scope="session")
def live_env(tmp_path_factory):
    """(simulated host root, glibc test rootfs) for runc/crun bundles."""
    _need_engines("runc", "crun", "gcc")
    import simhost
    import testimage
    base = tmp_path_factory.mktemp("live")
    root = str(base / "host")
    simhost.build(root, gpus=2, mig=True, version="550.54.14", stale=True)
    return root, testimage.build(str(base / "image"))


@pytest.fixture(scope="session")
def podman_live(tmp_path_factory, live_env):
    """podman with nvbind registered for createRuntime (not precreate) in hooks.d."""
    _need_engines("podman", "runc")
    import engines
    root, image = live_env
    state = str(tmp_path_factory.mktemp("podman-live"))
    os.makedirs(f"{state}/hooks.d")
    with open(f"{state}/hooks.d/50-nvbind-oci.json", "w") as f:
        json.dump({"version": "1.0.0", "hook": engines.nvbind_hook("createRuntime", root,
                                                                   f"{state}/nvbind.log"),
                   "when": {"always": True}, "stages": ["createRuntime"]}, f)
    pm = engines.Podman(state, f"{state}/hooks.d")
    pm.log = f"{state}/nvbind.log"
    pm.import_rootfs(image)
    yield pm
    subprocess.run(pm.base() + ["system", "reset", "--force"], capture_output=True)
    import daemons
    daemons.unmount_under(state)
