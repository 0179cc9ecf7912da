"""containerd 1.6 (Debian 12) with nvbind: config merge, `ctr run`, and the CRI path driven
as the kubelet drives it (RunPodSandbox, CreateContainer, StartContainer; runtime handler
`nvbind`, the RuntimeClass handler of packaging/kubernetes)."""
from __future__ import annotations

import json
import os
import shutil
import time
import tomllib
import uuid

import pytest
from engine_fixtures import IMAGE, containerd_env, gpu_host, uninstall  # noqa: F401 - fixtures

pytestmark = pytest.mark.e2e
CHECK = ["gpucheck", "/dev/nvidia1", "/dev/nvidia0"]


def runtimes(dump: str) -> dict:
    cri = tomllib.loads(dump)["plugins"]["io.containerd.grpc.v1.cri"]
    return cri["containerd"]["runtimes"]


def test_install_merges_config_and_keeps_runc(containerd_env):
    c = containerd_env
    text = open(c.config_file).read()
    assert text.startswith(c.before)                      # appended, nothing else touched
    assert open(c.config_file + ".nvbind-backup").read() == c.before
    dump = c.dump()
    assert dump.returncode == 0, dump.stderr
    rts = runtimes(dump.stdout)
    assert rts["nvbind"]["options"]["BinaryName"] == "/usr/local/bin/nvbind-runtime"
    assert rts["runc"]["runtime_type"] == "io.containerd.runc.v2"   # runc kept
    # the CRI plugin loaded (a missing default runtime makes it fail)
    plugins = c.ctr(["plugins", "ls"]).stdout
    cri = [line for line in plugins.splitlines() if line.split()[:2] == ["io.containerd.grpc.v1", "cri"]]
    assert cri and cri[0].split()[-1] == "ok", plugins


def test_ctr_run_with_nvbind_runtime(containerd_env):
    c = containerd_env
    cid = f"nvb-{uuid.uuid4().hex[:8]}"
    r = c.ctr(["run", "--rm", "--runc-binary", "/usr/local/bin/nvbind-runtime",
               "--env", "NVIDIA_VISIBLE_DEVICES=1", IMAGE, cid] + CHECK)
    assert r.returncode == 0, r.stderr
    assert "open /dev/nvidia1: ENXIO" in r.stdout and "open /dev/nvidia0: ENOENT" in r.stdout
    assert "nvbind" not in r.stdout + r.stderr
    # no request: nothing changes
    r = c.ctr(["run", "--rm", "--runc-binary", "/usr/local/bin/nvbind-runtime", IMAGE,
               cid + "b", "ls", "/dev"])
    assert r.returncode == 0 and "nvidia" not in r.stdout, r.stderr
    # a refused request fails the task with nvbind's own line
    r = c.ctr(["run", "--rm", "--runc-binary", "/usr/local/bin/nvbind-runtime",
               "--env", "NVIDIA_VISIBLE_DEVICES=7", IMAGE, cid + "c", "true"])
    c.ctr(["containers", "delete", cid + "c"])
    assert r.returncode != 0 and "nvbind: error: unknown device '7'" in r.stderr, r.stderr


def _pod(pb, name, logdir):
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=uuid.uuid4().hex, namespace="default"),
        log_directory=logdir,   # no hostname: the pod shares the node's UTS namespace
        linux=pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(
            # host network: no CNI plugin on this node; pid/ipc per pod as the kubelet sets
            namespace_options=pb.NamespaceOption(network=pb.NODE, pid=pb.CONTAINER, ipc=pb.POD))))


def _bundle(c, cid):
    return f"{c.dir}/state/io.containerd.runtime.v2.task/k8s.io/{cid}/config.json"


def test_cri_pod_with_runtime_handler_gets_gpu1(containerd_env):
    import cri
    c = containerd_env
    client = cri.Client(c.sock)
    pb = client.pb
    v = client.Version(pb.VersionRequest(version="v1"))
    assert v.runtime_name == "containerd" and v.runtime_api_version == "v1"
    logdir = f"{c.dir}/pods/{uuid.uuid4().hex[:8]}"
    os.makedirs(logdir)
    pod = _pod(pb, "gpu-pod", logdir)
    sid = client.RunPodSandbox(pb.RunPodSandboxRequest(config=pod, runtime_handler="nvbind")).pod_sandbox_id
    try:
        ccfg = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="cuda"), image=pb.ImageSpec(image=IMAGE),
            command=CHECK, envs=[pb.KeyValue(key="NVIDIA_VISIBLE_DEVICES", value="1")],
            log_path="cuda.log")
        cid = client.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=sid, config=ccfg, sandbox_config=pod)).container_id
        client.StartContainer(pb.StartContainerRequest(container_id=cid))
        for _ in range(150):
            st = client.ContainerStatus(pb.ContainerStatusRequest(container_id=cid)).status
            if st.state == pb.CONTAINER_EXITED:
                break
            time.sleep(0.2)
        assert st.state == pb.CONTAINER_EXITED and st.exit_code == 0, st
        out = open(os.path.join(logdir, "cuda.log")).read()
        assert "open /dev/nvidia1: ENXIO" in out and "open /dev/nvidia0: ENOENT" in out, out
        assert "nvbind" not in out
        # the pause container ran through nvbind too (the handler is per pod) and got nothing
        sandbox = json.load(open(_bundle(c, sid)))
        assert not any("nvidia" in d.get("path", "") for d in sandbox["linux"].get("devices", []))
        assert not any(e.startswith("NVBIND_") for e in sandbox["process"]["env"])
        logged = [json.loads(line) for line in open(c.nvbind_log)]
        mine = [e for e in logged if e.get("id") in (sid, cid) and e["stage"] == "runtime create"]
        assert {e["id"] for e in mine} == {sid, cid}
        assert [len(e.get("gpus", [])) for e in mine if e["id"] == cid] == [1]
        assert [e.get("gpus") for e in mine if e["id"] == sid] == [None]
        client.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))
    finally:
        client.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid))
        client.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid))
        client.close()


def test_cri_refused_request_names_nvbind_error(containerd_env):
    import grpc

    import cri
    c = containerd_env
    client = cri.Client(c.sock)
    pb = client.pb
    logdir = f"{c.dir}/pods/{uuid.uuid4().hex[:8]}"
    os.makedirs(logdir)
    pod = _pod(pb, "bad-pod", logdir)
    sid = client.RunPodSandbox(pb.RunPodSandboxRequest(config=pod, runtime_handler="nvbind")).pod_sandbox_id
    try:
        ccfg = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="bad"), image=pb.ImageSpec(image=IMAGE),
            command=["true"], envs=[pb.KeyValue(key="NVIDIA_VISIBLE_DEVICES", value="7")],
            log_path="bad.log")
        cid = client.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=sid, config=ccfg, sandbox_config=pod)).container_id
        with pytest.raises(grpc.RpcError) as e:
            client.StartContainer(pb.StartContainerRequest(container_id=cid))
        assert "nvbind: error: unknown device '7'" in e.value.details(), e.value.details()
    finally:
        client.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid))
        client.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid))
        client.close()


def test_doctor_reads_config_dump_and_uninstall_restores(containerd_env, tmp_path):
    c = containerd_env
    node = str(tmp_path / "node")
    shutil.copytree(c.node, node, symlinks=True)
    uninstall(node)
    assert open(f"{node}/etc/containerd/config.toml").read() == c.before
    from nvbind.admin import doctor
    ok, detail = doctor._containerd("/usr/bin/containerd", c.node)
    assert ok, detail
    ok, detail = doctor._containerd("/usr/bin/containerd", node)
    assert not ok and "no runtime named nvbind" in detail
