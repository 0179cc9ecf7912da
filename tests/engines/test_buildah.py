"""podman and buildah on one node after `nvbind install --engine podman`: podman runs
precreate from nvbind's own hooks directory (containers.conf.d names it), buildah and
`podman build` read only the createRuntime entry, and none of them breaks."""
from __future__ import annotations

import json
import os

import pytest
from engine_fixtures import IMAGE, gpu_host, podman_node  # noqa: F401 - fixtures

pytestmark = pytest.mark.e2e
CHECK = ["gpucheck", "/dev/nvidia1", "/dev/nvidia0"]


def stages(log):
    try:
        return [json.loads(line)["stage"] for line in open(log)]
    except FileNotFoundError:
        return []


def test_podman_run_gets_gpu1_through_precreate(podman_node):
    n = podman_node
    before = len(stages(n.nvbind_log))
    r = n.podman(["run", "--rm", "--network", "none", "--ulimit", "nofile=20000:20000",
                  "--ulimit", "nproc=32768:32768", "-e", "NVIDIA_VISIBLE_DEVICES=1", IMAGE] + CHECK)
    assert r.returncode == 0, r.stderr
    assert "open /dev/nvidia1: ENXIO" in r.stdout and "open /dev/nvidia0: ENOENT" in r.stdout
    assert "dlopen libcuda.so.1: OK" in r.stdout
    new = stages(n.nvbind_log)[before:]
    assert "precreate" in new and "createRuntime" not in new, new


def _from(n, env=()):
    r = n.buildah(["from", "--quiet", IMAGE])
    assert r.returncode == 0, r.stderr
    ctr = r.stdout.strip().splitlines()[-1]
    for e in env:
        assert n.buildah(["config", "--env", e, ctr]).returncode == 0
    return ctr


def test_buildah_run_without_and_with_gpu(podman_node):
    n = podman_node
    plain = _from(n)
    r = n.buildah(["run", "--runtime", "runc", "--network", "none", plain, "--", "ls", "/dev"])
    assert r.returncode == 0, r.stderr
    assert "nvidia" not in r.stdout
    gpu = _from(n, ["NVIDIA_VISIBLE_DEVICES=1"])
    before = len(stages(n.nvbind_log))
    r = n.buildah(["run", "--runtime", "runc", "--network", "none", gpu, "--"] + CHECK)
    assert r.returncode == 0, r.stderr
    assert "open /dev/nvidia1: ENXIO" in r.stdout and "open /dev/nvidia0: ENOENT" in r.stdout
    assert "createRuntime" in stages(n.nvbind_log)[before:]
    n.buildah(["rm", plain, gpu])


CONTAINERFILE = f"""FROM {IMAGE}
RUN echo plain-step-ran && ls /dev
ENV NVIDIA_VISIBLE_DEVICES=1
RUN gpucheck /dev/nvidia1 /dev/nvidia0
"""


@pytest.mark.parametrize("tool", ["buildah bud", "podman build"])
def test_build_with_and_without_gpu(podman_node, tmp_path, tool):
    n = podman_node
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(CONTAINERFILE)
    tag = f"localhost/nvbind-built-{tool.split()[0]}:1"
    common = ["--runtime", "runc", "--network", "none", "-t", tag, "-f",
              str(ctx / "Containerfile"), str(ctx)]
    if tool == "buildah bud":
        r = n.buildah(["bud", "--isolation", "oci", *common], timeout=300)
    else:
        r = n.podman(["build", "--isolation", "oci", *common], timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "unknown stage" not in out
    assert "plain-step-ran" in out
    plain = out.split("plain-step-ran", 1)[1].split("ENV", 1)[0]
    assert "nvidia" not in plain                        # the step without a request
    assert "open /dev/nvidia1: ENXIO" in out and "open /dev/nvidia0: ENOENT" in out


def test_install_layout(podman_node):
    n = podman_node
    precreate = [f"{d}/{f}" for d in ("etc/containers/oci/hooks.d", "usr/share/containers/oci/hooks.d")
                 if os.path.isdir(f"{n.dest}/{d}") for f in os.listdir(f"{n.dest}/{d}")
                 if "precreate" in open(f"{n.dest}/{d}/{f}").read()]
    assert precreate == []                              # nothing buildah reads has precreate
    assert os.path.exists(f"{n.dest}/usr/local/lib/nvbind/hooks.d/50-nvbind-precreate.json")
