"""`nvbind device-plugin` driven as the kubelet drives it (see kubelet.py), on the
simulated host, and real podman containers started with what Allocate returned."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from conftest import nvbind_cmd, run_nvbind, write_cdi_spec

grpc = pytest.importorskip("grpc", reason="grpcio missing: `make venv` installs the [k8s] extra")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kubelet import Kubelet  # noqa: E402

from nvbind.k8s import api_pb2  # noqa: E402

CFG = "[device_plugin]\npoll_interval = 0.2\n"


def gpu_uuid(i):
    import simhost
    return simhost.gpu_uuid(i)


@contextlib.contextmanager
def plugin(root, plugin_dir, tmp_path, config=CFG, name="dp", cmd=None):
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(config)
    err = open(tmp_path / f"{name}.stderr", "w+")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "NVBIND_LOG": "off",
           "NVBIND_CONFIG": str(cfg), "NVBIND_CACHE_DIR": str(tmp_path / "cache")}
    p = subprocess.Popen((cmd or nvbind_cmd()) + ["--root", root, "device-plugin", "--plugin-dir", plugin_dir],
                         stdout=subprocess.DEVNULL, stderr=err, env=env)
    p.stderr_file = err
    try:
        yield p
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        err.close()


def stderr_of(p) -> str:
    p.stderr_file.flush()
    p.stderr_file.seek(0)
    return p.stderr_file.read()


def wait_for(p, text, count=1, timeout=20):
    """Until the plugin's stderr holds `text` `count` times (its side of an RPC is done)."""
    deadline = time.monotonic() + timeout
    while stderr_of(p).count(text) < count:
        assert time.monotonic() < deadline, f"no {text!r} x{count}:\n{stderr_of(p)}"
        time.sleep(0.05)


def register(kubelet, p):
    try:
        return kubelet.next_registration(timeout=30)
    except Exception:
        pytest.fail(f"no Register within 30 s; plugin rc={p.poll()} stderr:\n{stderr_of(p)}")


@pytest.fixture
def kubelet(tmp_path):
    k = Kubelet(str(tmp_path / "device-plugins")).start()
    yield k
    k.stop()


def test_register_list_allocate_and_real_containers(podman_env, kubelet, tmp_path):
    import engines
    root, pm = podman_env
    with plugin(root, kubelet.dir, tmp_path) as p:
        req, opts = register(kubelet, p)
        assert (req.version, req.resource_name, req.endpoint) == ("v1beta1", "nvidia.com/gpu",
                                                                  "nvbind-gpu.sock")
        assert req.options.get_preferred_allocation_available and not req.options.pre_start_required
        assert opts == req.options
        assert os.path.exists(os.path.join(kubelet.dir, "nvbind-gpu.sock"))
        ch, stub = kubelet.plugin(req.endpoint)
        with ch:
            stream = stub.ListAndWatch(api_pb2.Empty(), timeout=60)
            first = next(stream)
            assert [(d.ID, d.health) for d in first.devices] == \
                [(gpu_uuid(0), "Healthy"), (gpu_uuid(1), "Healthy")]
            stream.cancel()
            pref = stub.GetPreferredAllocation(api_pb2.PreferredAllocationRequest(container_requests=[
                api_pb2.ContainerPreferredAllocationRequest(
                    available_deviceIDs=[gpu_uuid(1), gpu_uuid(0)], allocation_size=1)]))
            assert list(pref.container_responses[0].deviceIDs) == [gpu_uuid(0)]   # stable order
            resp = stub.Allocate(api_pb2.AllocateRequest(container_requests=[
                api_pb2.ContainerAllocateRequest(devices_ids=[gpu_uuid(1)])]))
            (c,) = resp.container_responses
            assert dict(c.envs)["NVIDIA_VISIBLE_DEVICES"] == gpu_uuid(1)
            assert [d.name for d in c.cdi_devices] == [f"nvidia.com/gpu={gpu_uuid(1)}"]
            with pytest.raises(grpc.RpcError) as e:
                stub.Allocate(api_pb2.AllocateRequest(container_requests=[
                    api_pb2.ContainerAllocateRequest(devices_ids=["GPU-not-ours"])]))
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # a runtime with CDI: the names resolve in the spec `nvbind cdi generate` writes
    # (podman 4.3 has no --cdi-spec-dir; /var/run/cdi is one of the two it reads)
    os.makedirs("/var/run/cdi", exist_ok=True)
    spec = f"/var/run/cdi/nvbind-dp-test-{uuid.uuid4().hex[:8]}.json"
    write_cdi_spec(root, spec)     # mapped onto where this machine sees the simulated host
    try:
        plain = engines.Podman(pm.state)      # no hooks: CDI alone
        r = plain.run(["gpucheck", "/dev/nvidia1", "/dev/nvidia0"],
                      extra=[x for d in c.cdi_devices for x in ("--device", d.name)])
        assert r.returncode == 0, r.stdout + r.stderr
        assert "open /dev/nvidia1: ENXIO" in r.stdout and "open /dev/nvidia0: ENOENT" in r.stdout
    finally:
        os.unlink(spec)
    # a runtime without CDI: the env, read by nvbind's precreate hook
    r = pm.run(["gpucheck", "/dev/nvidia1", "/dev/nvidia0"], env=dict(c.envs))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "open /dev/nvidia1: ENXIO" in r.stdout and "open /dev/nvidia0: ENOENT" in r.stdout


def test_device_node_disappears_then_returns(podman_env, kubelet, tmp_path):
    root, _pm = podman_env
    node = f"{root}/dev/nvidia1"
    with plugin(root, kubelet.dir, tmp_path) as p:
        req, _ = register(kubelet, p)
        ch, stub = kubelet.plugin(req.endpoint)
        with ch:
            stream = stub.ListAndWatch(api_pb2.Empty(), timeout=60)
            assert all(d.health == "Healthy" for d in next(stream).devices)
            os.rename(node, node + ".gone")
            try:
                upd = next(stream)
                assert {d.ID: d.health for d in upd.devices} == \
                    {gpu_uuid(0): "Healthy", gpu_uuid(1): "Unhealthy"}
            finally:
                os.rename(node + ".gone", node)
            back = next(stream)
            assert {d.health for d in back.devices} == {"Healthy"}
            stream.cancel()
        assert "device nodes gone: ['/dev/nvidia1']" in stderr_of(p)


def test_kubelet_restart_registers_again(podman_env, kubelet, tmp_path):
    root, _pm = podman_env
    with plugin(root, kubelet.dir, tmp_path) as p:
        req, _ = register(kubelet, p)
        wait_for(p, "registered nvidia.com/gpu")
        ch, stub = kubelet.plugin(req.endpoint)
        stream = stub.ListAndWatch(api_pb2.Empty(), timeout=60)
        next(stream)
        # the kubelet restarts: its registration server goes, it wipes the directory
        # (our socket with it) and serves kubelet.sock again
        kubelet.stop()
        restarted = Kubelet(kubelet.dir).start()
        try:
            req2, _ = register(restarted, p)
            assert req2.resource_name == "nvidia.com/gpu" and req2.endpoint == req.endpoint
            with pytest.raises(grpc.RpcError):    # the old stream ended with the old server
                for _ in range(5):
                    next(stream)
            ch.close()
            ch, stub = restarted.plugin(req2.endpoint)
            with ch:
                ids = [d.ID for d in next(stub.ListAndWatch(api_pb2.Empty(), timeout=30)).devices]
                assert ids == [gpu_uuid(0), gpu_uuid(1)]
        finally:
            restarted.stop()
        assert "plugin socket gone: serving again" in stderr_of(p)


def test_new_kubelet_sock_alone_registers_again(podman_env, kubelet, tmp_path):
    root, _pm = podman_env
    with plugin(root, kubelet.dir, tmp_path) as p:
        register(kubelet, p)
        wait_for(p, "registered nvidia.com/gpu")      # the plugin has the kubelet's answer
        kubelet.stop()
        restarted = Kubelet(kubelet.dir).start(cleanup=False)    # our socket stays
        try:
            req, _ = register(restarted, p)
            assert req.endpoint == "nvbind-gpu.sock"
            wait_for(p, "registered nvidia.com/gpu", 2)
            assert "registration failed" not in stderr_of(p)
        finally:
            restarted.stop()
        assert "plugin socket gone" not in stderr_of(p)


def test_own_restart_stale_socket_and_sigterm(podman_env, kubelet, tmp_path):
    root, _pm = podman_env
    sock = os.path.join(kubelet.dir, "nvbind-gpu.sock")
    with plugin(root, kubelet.dir, tmp_path, name="first") as p:
        register(kubelet, p)
        p.kill()                     # no clean-up: the socket stays behind
        p.wait()
    assert os.path.exists(sock)
    with plugin(root, kubelet.dir, tmp_path, name="second") as p:
        req, _ = register(kubelet, p)
        ch, stub = kubelet.plugin(req.endpoint)
        with ch:
            assert len(next(stub.ListAndWatch(api_pb2.Empty(), timeout=30)).devices) == 2
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        assert p.wait(15) == 0, stderr_of(p)
        assert time.monotonic() - t0 < 10
        assert not os.path.exists(sock)
        assert os.path.exists(kubelet.sock)       # the kubelet's is not ours to remove
        assert "SIGTERM: stopping" in stderr_of(p)


def test_shared_replicas_over_grpc(podman_env, kubelet, tmp_path):
    root, _pm = podman_env
    with plugin(root, kubelet.dir, tmp_path, config=CFG + "replicas = 3\n") as p:
        req, _ = register(kubelet, p)
        ch, stub = kubelet.plugin(req.endpoint)
        with ch:
            ids = [d.ID for d in next(stub.ListAndWatch(api_pb2.Empty(), timeout=30)).devices]
            assert ids == [f"{gpu_uuid(g)}::{k}" for g in (0, 1) for k in range(3)]
            pref = stub.GetPreferredAllocation(api_pb2.PreferredAllocationRequest(container_requests=[
                api_pb2.ContainerPreferredAllocationRequest(available_deviceIDs=ids,
                                                            allocation_size=2)]))
            got = list(pref.container_responses[0].deviceIDs)
            assert {i.split("::")[0] for i in got} == {gpu_uuid(0), gpu_uuid(1)}   # two GPUs
            resp = stub.Allocate(api_pb2.AllocateRequest(container_requests=[
                api_pb2.ContainerAllocateRequest(devices_ids=[f"{gpu_uuid(1)}::2"])]))
            assert resp.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"] == gpu_uuid(1)


def test_mixed_strategy_without_nvml_leaves_mig_out(podman_env, kubelet, tmp_path):
    """procfs knows MIG instances but not their profiles: under `mixed` they cannot be
    named nvidia.com/mig-<profile>, so only the GPU without MIG is advertised."""
    root, _pm = podman_env
    with plugin(root, kubelet.dir, tmp_path, config=CFG + 'mig_strategy = "mixed"\n') as p:
        req, _ = register(kubelet, p)
        ch, stub = kubelet.plugin(req.endpoint)
        with ch:
            ids = [d.ID for d in next(stub.ListAndWatch(api_pb2.Empty(), timeout=30)).devices]
        assert ids == [gpu_uuid(1)]
        assert "profile unknown" in stderr_of(p)


def test_single_strategy_refuses_a_node_with_mig_on_one_gpu(podman_env, tmp_path):
    root, _pm = podman_env
    cfg = tmp_path / "c.toml"
    cfg.write_text('[device_plugin]\nmig_strategy = "single"\n')
    r = run_nvbind(["--root", root, "device-plugin", "--plugin-dir", str(tmp_path)],
                   env={"NVBIND_CONFIG": str(cfg), "NVBIND_CACHE_DIR": str(tmp_path)})
    assert r.returncode != 0
    assert b"single needs MIG on every GPU" in r.stderr


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FROZEN_K8S = os.path.join(REPO, "dist", "nvbind-k8s")
FROZEN = os.path.join(REPO, "dist", "nvbind")


def test_frozen_device_plugin(podman_env, kubelet, tmp_path):
    """dist/nvbind-k8s (make dist) serves the plugin; dist/nvbind, which must stay small,
    has no gRPC and says where the plugin is."""
    if not os.path.exists(FROZEN_K8S):
        pytest.skip("dist/nvbind-k8s not built (make test builds it with `make dist`)")
    root, _pm = podman_env
    assert os.path.getsize(FROZEN) <= 20 << 20 and os.path.getsize(FROZEN_K8S) <= 20 << 20
    with plugin(root, kubelet.dir, tmp_path, cmd=[FROZEN_K8S]) as p:
        req, _ = register(kubelet, p)
        ch, stub = kubelet.plugin(req.endpoint)
        with ch:
            ids = [d.ID for d in next(stub.ListAndWatch(api_pb2.Empty(), timeout=30)).devices]
            assert ids == [gpu_uuid(0), gpu_uuid(1)]
            resp = stub.Allocate(api_pb2.AllocateRequest(container_requests=[
                api_pb2.ContainerAllocateRequest(devices_ids=[gpu_uuid(0)])]))
            assert resp.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"] == gpu_uuid(0)
        p.send_signal(signal.SIGTERM)
        assert p.wait(15) == 0, stderr_of(p)
    cfg = tmp_path / "c.toml"
    cfg.write_text("")
    r = subprocess.run([FROZEN, "--root", root, "device-plugin", "--plugin-dir", kubelet.dir],
                       capture_output=True, text=True, timeout=60,
                       env={"NVBIND_LOG": "off", "NVBIND_CONFIG": str(cfg),
                            "NVBIND_CACHE_DIR": str(tmp_path)})
    assert r.returncode == 1 and "nvbind-k8s" in r.stderr, r.stderr
