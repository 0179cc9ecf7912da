"""The kubelet's side of the device plugin API v1beta1, for tests.

What it does is what the kubelet's device manager does (kubernetes/kubernetes,
pkg/kubelet/cm/devicemanager/plugin/v1beta1/server.go and client.go; manager.go for the
directory clean-up):
  * on start it removes every file in the device plugin directory except its checkpoint
    (kubelet_internal_checkpoint) and serves Registration on kubelet.sock there;
  * Register checks the version against the supported ones ("v1beta1") and that the
    resource name is an extended resource name, then dials the plugin's endpoint
    (directory + endpoint) and asks it GetDevicePluginOptions before answering;
  * it then reads ListAndWatch and calls GetPreferredAllocation / Allocate when a pod
    is admitted (here: when the test says so).
It speaks the published protocol through the same api.proto the plugin uses.
"""
from __future__ import annotations

import os
import queue
import re
from concurrent import futures

import grpc

from nvbind.k8s import api_pb2, api_pb2_grpc

CHECKPOINT = "kubelet_internal_checkpoint"
SUPPORTED = ("v1beta1",)
_QUALIFIED = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)/"
                        r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")


def is_extended_resource_name(name: str) -> bool:
    """v1helper.IsExtendedResourceName: qualified name, not in kubernetes.io, not requests.*"""
    m = _QUALIFIED.match(name)
    return bool(m) and "kubernetes.io/" not in name and not name.startswith("requests.")


class Registration(api_pb2_grpc.RegistrationServicer):
    def __init__(self, kubelet: "Kubelet"):
        self.k = kubelet

    def Register(self, request, context):
        if request.version not in SUPPORTED:
            context.abort(grpc.StatusCode.UNKNOWN,
                          f"requested device plugin version {request.version} is not supported")
        if not is_extended_resource_name(request.resource_name):
            context.abort(grpc.StatusCode.UNKNOWN, f"invalid name of device plugin socket: "
                                                   f"{request.resource_name}")
        endpoint = os.path.join(self.k.dir, request.endpoint)
        ch = grpc.insecure_channel(f"unix://{endpoint}")
        try:
            grpc.channel_ready_future(ch).result(timeout=10)
            opts = api_pb2_grpc.DevicePluginStub(ch).GetDevicePluginOptions(api_pb2.Empty(),
                                                                              timeout=10)
        except Exception as e:  # noqa: BLE001
            ch.close()
            context.abort(grpc.StatusCode.UNKNOWN, f"cannot connect to {endpoint}: {e}")
        self.k.registrations.put((request, opts))
        ch.close()
        return api_pb2.Empty()


class Kubelet:
    def __init__(self, plugin_dir: str):
        self.dir = plugin_dir
        self.registrations: queue.Queue = queue.Queue()
        self.server = None

    @property
    def sock(self) -> str:
        return os.path.join(self.dir, "kubelet.sock")

    def start(self, cleanup: bool = True) -> "Kubelet":
        """cleanup=False: only a new kubelet.sock (as when the directory's clean-up failed
        or something else re-created the socket); the plugin must register again anyway."""
        os.makedirs(self.dir, mode=0o750, exist_ok=True)
        for n in os.listdir(self.dir) if cleanup else ():    # CleanupPluginDirectory
            p = os.path.join(self.dir, n)
            if n != CHECKPOINT and not os.path.isdir(p):
                os.unlink(p)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        api_pb2_grpc.add_RegistrationServicer_to_server(Registration(self), self.server)
        assert self.server.add_insecure_port(f"unix://{self.sock}")
        self.server.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(grace=0).wait(5)
            self.server = None
        if os.path.exists(self.sock):
            os.unlink(self.sock)

    def next_registration(self, timeout=20):
        return self.registrations.get(timeout=timeout)

    def plugin(self, endpoint: str):
        """A DevicePlugin stub on the plugin's socket, as the kubelet dials it."""
        ch = grpc.insecure_channel(f"unix://{os.path.join(self.dir, endpoint)}")
        grpc.channel_ready_future(ch).result(timeout=10)
        return ch, api_pb2_grpc.DevicePluginStub(ch)
