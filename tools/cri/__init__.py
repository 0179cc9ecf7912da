"""A small CRI v1 client for the tests (the kubelet's side of the protocol), over grpcio.

The Python modules are generated from runtime_v1_subset.proto with grpcio-tools at test
time, into .cache/cri/<hash of the .proto>/ (rebuilt when the .proto changes): generated
code is tied to the installed protobuf runtime, so it is not committed. grpcio and
grpcio-tools are test dependencies only; nothing in nvbind imports them.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = "runtime_v1_subset.proto"
CACHE = os.path.join(os.path.dirname(os.path.dirname(HERE)), ".cache", "cri")


def modules():
    """(messages module, grpc stubs module), generated once per .proto content."""
    with open(os.path.join(HERE, PROTO), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    out = os.path.join(CACHE, digest)
    if not os.path.exists(os.path.join(out, "runtime_v1_subset_pb2_grpc.py")):
        os.makedirs(out, exist_ok=True)
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{HERE}",
                        f"--python_out={out}", f"--grpc_python_out={out}", PROTO],
                       check=True, timeout=120)
    if out not in sys.path:
        sys.path.insert(0, out)
    return (importlib.import_module("runtime_v1_subset_pb2"),
            importlib.import_module("runtime_v1_subset_pb2_grpc"))


class Client:
    """RuntimeService on a unix socket, every call bounded in time."""

    def __init__(self, sock: str, timeout: float = 60):
        import grpc
        self.pb, grpc_mod = modules()
        self.channel = grpc.insecure_channel(f"unix://{sock}")
        self.rt = grpc_mod.RuntimeServiceStub(self.channel)
        self.timeout = timeout

    def __getattr__(self, name):
        method = getattr(self.rt, name)
        return lambda req: method(req, timeout=self.timeout)

    def close(self):
        self.channel.close()
