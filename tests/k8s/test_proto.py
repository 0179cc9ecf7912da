"""The committed gRPC modules are what `make proto` makes of api.proto, and api.proto
keeps the published kubelet API's names and field numbers (the wire protocol)."""
import os
import subprocess
import sys

import pytest

HOOK = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "hook")
K8S = os.path.join(HOOK, "nvbind", "k8s")


def test_generated_modules_match_the_proto(tmp_path):
    pytest.importorskip("grpc_tools", reason="grpcio-tools is in the [test] extra (make venv)")
    os.makedirs(tmp_path / "nvbind" / "k8s")
    with open(os.path.join(K8S, "api.proto"), "rb") as f, \
            open(tmp_path / "nvbind" / "k8s" / "api.proto", "wb") as g:
        g.write(f.read())
    r = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I.", "--python_out=.",
                        "--grpc_python_out=.", "nvbind/k8s/api.proto"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for name in ("api_pb2.py", "api_pb2_grpc.py"):
        with open(os.path.join(K8S, name), "rb") as a, open(tmp_path / "nvbind" / "k8s" / name, "rb") as b:
            assert a.read() == b.read(), f"{name} is stale: run `make proto` and commit it"


# (message, field, number) from kubernetes/kubernetes
# staging/src/k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1/api.proto
PUBLISHED = [
    ("DevicePluginOptions", "pre_start_required", 1),
    ("DevicePluginOptions", "get_preferred_allocation_available", 2),
    ("RegisterRequest", "version", 1), ("RegisterRequest", "endpoint", 2),
    ("RegisterRequest", "resource_name", 3), ("RegisterRequest", "options", 4),
    ("ListAndWatchResponse", "devices", 1), ("TopologyInfo", "nodes", 1), ("NUMANode", "ID", 1),
    ("Device", "ID", 1), ("Device", "health", 2), ("Device", "topology", 3),
    ("PreStartContainerRequest", "devices_ids", 1),
    ("PreferredAllocationRequest", "container_requests", 1),
    ("ContainerPreferredAllocationRequest", "available_deviceIDs", 1),
    ("ContainerPreferredAllocationRequest", "must_include_deviceIDs", 2),
    ("ContainerPreferredAllocationRequest", "allocation_size", 3),
    ("PreferredAllocationResponse", "container_responses", 1),
    ("ContainerPreferredAllocationResponse", "deviceIDs", 1),
    ("AllocateRequest", "container_requests", 1), ("ContainerAllocateRequest", "devices_ids", 1),
    ("CDIDevice", "name", 1), ("AllocateResponse", "container_responses", 1),
    ("ContainerAllocateResponse", "envs", 1), ("ContainerAllocateResponse", "mounts", 2),
    ("ContainerAllocateResponse", "devices", 3), ("ContainerAllocateResponse", "annotations", 4),
    ("ContainerAllocateResponse", "cdi_devices", 5),
    ("Mount", "container_path", 1), ("Mount", "host_path", 2), ("Mount", "read_only", 3),
    ("DeviceSpec", "container_path", 1), ("DeviceSpec", "host_path", 2),
    ("DeviceSpec", "permissions", 3),
]


def test_published_names_and_numbers():
    pytest.importorskip("google.protobuf", reason="protobuf is in the [k8s] extra (make venv)")
    from nvbind.k8s import api_pb2
    d = api_pb2.DESCRIPTOR
    assert d.package == "v1beta1"
    for msg, field, num in PUBLISHED:
        assert d.message_types_by_name[msg].fields_by_name[field].number == num, (msg, field)
    methods = {s.name: [m.name for m in s.methods] for s in d.services_by_name.values()}
    assert methods == {"Registration": ["Register"],
                       "DevicePlugin": ["GetDevicePluginOptions", "ListAndWatch",
                                        "GetPreferredAllocation", "Allocate", "PreStartContainer"]}
    law = d.services_by_name["DevicePlugin"].methods_by_name["ListAndWatch"]
    assert law.server_streaming and not law.client_streaming
