"""`nvbind device-plugin`: the kubelet device plugin API v1beta1 over gRPC.

The protocol (api.proto beside this file, from the published kubelet API):
  1. the plugin serves DevicePlugin on a unix socket in the device plugin directory
     (/var/lib/kubelet/device-plugins), one socket per resource name;
  2. it calls Registration.Register on kubelet.sock in that directory with the API
     version, the socket's file name and the resource name;
  3. the kubelet dials the socket back: ListAndWatch (a stream of the full device list,
     sent again on every change), GetPreferredAllocation, Allocate, PreStartContainer.
A restarting kubelet removes the sockets in the directory and re-creates kubelet.sock;
the plugin then serves again and registers again (polled every poll_interval seconds).

What is advertised and what an allocation gives is decided in nvbind.k8s.devices (pure);
this module gathers the facts (inventory, NUMA/PCI topology, node presence, NVML events)
and does the gRPC plumbing.
"""

import os
import signal
import stat
import sys
import threading
import time

from nvbind.errors import InputError, NvbindError
from nvbind.k8s import devices

PLUGIN_DIR = "/var/lib/kubelet/device-plugins"
KUBELET_SOCKET = "kubelet.sock"
API_VERSION = "v1beta1"
RPC_TIMEOUT = 10
# XIDs NVIDIA's device plugin does not count against a GPU's health: application errors
# (13 graphics engine exception, 31 GPU memory page fault, 43 GPU stopped processing,
# 45 preemptive cleanup, 68 video processor exception, 109 context switch timeout)
APP_XIDS = {13, 31, 43, 45, 68, 109}


def log(msg: str) -> None:
    print(f"nvbind device-plugin: {msg}", file=sys.stderr, flush=True)


def socket_name(resource: str) -> str:
    """nvidia.com/gpu -> nvbind-gpu.sock, nvidia.com/mig-1g.10gb -> nvbind-mig-1g.10gb.sock"""
    return f"nvbind-{resource.rpartition('/')[2]}.sock"


# ---- facts about the host -------------------------------------------------------------
def topology(root: str, inv) -> dict:
    """{bus_id: {"numa": int | None, "pci": (bus ids from the root complex)}} from sysfs
    under the root; a GPU without sysfs entries has no topology (stable order then)."""
    import re
    r = root.rstrip("/")
    out = {}
    for g in inv.gpus:
        base = f"{r}/sys/bus/pci/devices/{g.bus_id}"
        t = {"numa": None, "pci": ()}
        try:
            with open(f"{base}/numa_node") as f:
                n = int(f.read(32).strip())
            t["numa"] = n if n >= 0 else None
        except (OSError, ValueError):
            pass
        try:   # ../../../devices/pci0000:00/0000:00:01.0/0000:10:00.0: read, never followed
            target = os.readlink(base)
            t["pci"] = tuple(p for p in target.split("/")
                             if re.fullmatch(r"pci[0-9a-f]{4}:[0-9a-f]{2}|"
                                             r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]", p))
        except OSError:
            pass
        if t["numa"] is not None or t["pci"]:
            out[g.bus_id] = t
    return out


def absent_nodes(root: str, units_by_res: dict) -> frozenset:
    r = root.rstrip("/")
    out = set()
    for us in units_by_res.values():
        for u in us:
            for p in u.nodes:
                try:
                    if not stat.S_ISCHR(os.lstat(r + p).st_mode):
                        out.add(p)
                except OSError:
                    out.add(p)
    return frozenset(out)


def nvml_mig_profiles(inv) -> dict:
    """{MIG UUID: "1g.10gb"} from NVML's device names ("NVIDIA A100-SXM4-40GB MIG 1g.5gb").
    Real host only; untested here (no GPU on the test machines)."""
    out = {}
    try:
        import pynvml as nv
        nv.nvmlInit()
        try:
            for g in inv.gpus:
                h = nv.nvmlDeviceGetHandleByUUID(g.uuid)
                for j in range(nv.nvmlDeviceGetMaxMigDeviceCount(h)):
                    try:
                        m = nv.nvmlDeviceGetMigDeviceHandleByIndex(h, j)
                    except nv.NVMLError:
                        continue
                    name, uuid = nv.nvmlDeviceGetName(m), nv.nvmlDeviceGetUUID(m)
                    name, uuid = (x.decode() if isinstance(x, bytes) else x for x in (name, uuid))
                    if " MIG " in name:
                        out[uuid] = name.rsplit(" MIG ", 1)[1].strip()
        finally:
            nv.nvmlShutdown()
    except Exception as e:  # noqa: BLE001 - NVML missing or failing: profiles unknown
        log(f"MIG profiles from NVML unavailable ({type(e).__name__}: {e})")
    return out


def nvml_xid_watch(plugin, stop: threading.Event) -> None:
    """Marks a GPU (or MIG instance) unhealthy on an NVML critical XID event that is not an
    application error. Real host only; untested here (no GPU on the test machines)."""
    try:
        import pynvml as nv
        nv.nvmlInit()
    except Exception as e:  # noqa: BLE001
        log(f"NVML health events unavailable ({type(e).__name__}: {e}): node presence only")
        return
    try:
        es = nv.nvmlEventSetCreate()
        for g in plugin.inv.gpus:
            try:
                nv.nvmlDeviceRegisterEvents(nv.nvmlDeviceGetHandleByUUID(g.uuid),
                                            nv.nvmlEventTypeXidCriticalError, es)
            except nv.NVMLError as e:
                log(f"GPU {g.uuid}: no XID events ({e})")
        while not stop.is_set():
            try:
                ev = nv.nvmlEventSetWait_v2(es, 5000)
            except nv.NVMLError_Timeout:
                continue
            if ev.eventType != nv.nvmlEventTypeXidCriticalError or ev.eventData in APP_XIDS:
                continue
            uuid = nv.nvmlDeviceGetUUID(ev.device)
            uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
            log(f"XID {ev.eventData} on {uuid}: marked unhealthy")
            plugin.mark_bad(uuid)
    except Exception as e:  # noqa: BLE001
        log(f"NVML event loop ended ({type(e).__name__}: {e})")
    finally:
        try:
            nv.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


# ---- the plugin -----------------------------------------------------------------------
class Plugin:
    def __init__(self, root: str, plugin_dir: str, s: devices.Settings, inv, units: dict):
        self.root, self.dir, self.s, self.inv, self.units = root, plugin_dir, s, inv, units
        self.cond = threading.Condition()
        self.version = 0
        self.bad: set[str] = set()
        self.absent = absent_nodes(root, units)
        self.stopping = False
        self.servers: dict = {}

    # -- state shared with the gRPC threads
    def adverts(self, resource: str):
        with self.cond:
            return self.version, devices.advertise(self.units[resource], self.absent, self.bad)

    def _changed(self):
        with self.cond:
            self.version += 1
            self.cond.notify_all()

    def mark_bad(self, uuid: str) -> None:
        with self.cond:
            self.bad.add(uuid)
        self._changed()

    def poll_health(self) -> None:
        absent = absent_nodes(self.root, self.units)
        if absent != self.absent:
            gone, back = sorted(absent - self.absent), sorted(self.absent - absent)
            log(f"device nodes gone: {gone or '-'}; back: {back or '-'}")
            with self.cond:
                self.absent = absent
            self._changed()

    # -- sockets and registration
    def sock(self, resource: str) -> str:
        return os.path.join(self.dir, socket_name(resource))

    def _remove_socket(self, path: str) -> None:
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
            else:
                raise NvbindError(f"{path} exists and is not a socket: not touching it")
        except FileNotFoundError:
            pass

    def serve(self) -> None:
        import grpc
        from concurrent import futures

        from nvbind.k8s import api_pb2_grpc
        for res in self.units:
            path = self.sock(res)
            self._remove_socket(path)         # stale, from our previous run
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=8,
                                                            thread_name_prefix="dp"))
            api_pb2_grpc.add_DevicePluginServicer_to_server(make_servicer(self, res), server)
            if not server.add_insecure_port(f"unix://{path}"):
                raise NvbindError(f"cannot listen on {path}")
            server.start()
            self.servers[res] = server
            log(f"serving {res} on {path}")

    def stop_serving(self) -> None:
        for res, server in list(self.servers.items()):
            server.stop(grace=1).wait(5)
            try:
                self._remove_socket(self.sock(res))
            except NvbindError as e:
                log(str(e))
        self.servers.clear()

    def sockets_ok(self) -> bool:
        for res in self.units:
            try:
                if not stat.S_ISSOCK(os.lstat(self.sock(res)).st_mode):
                    return False
            except OSError:
                return False
        return True

    def register(self) -> None:
        import grpc

        from nvbind.k8s import api_pb2, api_pb2_grpc
        kubelet = os.path.join(self.dir, KUBELET_SOCKET)
        with grpc.insecure_channel(f"unix://{kubelet}") as ch:
            stub = api_pb2_grpc.RegistrationStub(ch)
            for res in self.units:
                stub.Register(api_pb2.RegisterRequest(
                    version=API_VERSION, endpoint=socket_name(res), resource_name=res,
                    options=OPTIONS_PB(api_pb2)), timeout=RPC_TIMEOUT)
                log(f"registered {res} with {kubelet}")

    def run(self, stop: threading.Event) -> None:
        """Serve, register, and keep both alive until `stop` is set."""
        import grpc
        kubelet = os.path.join(self.dir, KUBELET_SOCKET)
        registered_with = None       # (inode, ctime) of the kubelet.sock we registered with
        retry_at = 0.0
        self.serve()
        try:
            while True:
                self.poll_health()
                try:
                    st = os.stat(kubelet)
                    ident = (st.st_ino, st.st_ctime_ns)
                except OSError:
                    ident = None
                if not self.sockets_ok():
                    # the kubelet removed our sockets (it clears the directory on start)
                    log("plugin socket gone: serving again")
                    self.stop_serving()
                    self.serve()
                    registered_with = None
                if ident is not None and ident != registered_with and time.monotonic() >= retry_at:
                    try:
                        self.register()
                        registered_with = ident
                    except grpc.RpcError as e:
                        log(f"registration failed: {e.code().name}: {e.details()}; retrying")
                        retry_at = time.monotonic() + 5
                if stop.wait(self.s.poll_interval):
                    break
        finally:
            self.stopping = True
            self._changed()
            self.stop_serving()


def OPTIONS_PB(api_pb2):
    return api_pb2.DevicePluginOptions(pre_start_required=False,
                                       get_preferred_allocation_available=True)


def make_servicer(plugin: "Plugin", resource: str):
    """DevicePlugin for one resource name (built here: grpc is imported only when serving)."""
    from nvbind.k8s import api_pb2, api_pb2_grpc
    return type("Servicer", (Servicer, api_pb2_grpc.DevicePluginServicer), {})(
        plugin, resource, api_pb2)


class Servicer:
    def __init__(self, plugin: Plugin, resource: str, api_pb2):
        self.p, self.res, self.pb = plugin, resource, api_pb2

    def GetDevicePluginOptions(self, request, context):
        return OPTIONS_PB(self.pb)

    def ListAndWatch(self, request, context):
        pb, sent = self.pb, None
        while True:
            with self.p.cond:
                while (self.p.version == sent and not self.p.stopping and context.is_active()):
                    self.p.cond.wait(0.5)
                if self.p.stopping or not context.is_active():
                    return
            sent, ads = self.p.adverts(self.res)
            yield pb.ListAndWatchResponse(devices=[
                pb.Device(ID=i, health=devices.HEALTHY if ok else devices.UNHEALTHY,
                          topology=pb.TopologyInfo(nodes=[pb.NUMANode(ID=numa)])
                          if numa is not None else None)
                for i, ok, numa in ads])

    def GetPreferredAllocation(self, request, context):
        pb = self.pb
        out = []
        for r in request.container_requests:
            ids = devices.preferred(self.p.units[self.res], list(r.available_deviceIDs),
                                    list(r.must_include_deviceIDs), r.allocation_size)
            out.append(pb.ContainerPreferredAllocationResponse(deviceIDs=ids))
        return pb.PreferredAllocationResponse(container_responses=out)

    def Allocate(self, request, context):
        import grpc
        pb = self.pb
        out = []
        for r in request.container_requests:
            try:
                a = devices.allocate(self.p.s, self.p.units[self.res], list(r.devices_ids),
                                     self.p.inv)
            except InputError as e:
                log(f"Allocate refused: {e}")
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            log(f"Allocate {list(r.devices_ids)} -> {a.envs} {list(a.cdi_devices)}")
            out.append(pb.ContainerAllocateResponse(
                envs=a.envs, annotations=a.annotations,
                cdi_devices=[pb.CDIDevice(name=n) for n in a.cdi_devices],
                mounts=[pb.Mount(container_path=c, host_path=h, read_only=ro)
                        for c, h, ro in a.mounts]))
        return pb.AllocateResponse(container_responses=out)

    def PreStartContainer(self, request, context):
        return self.pb.PreStartContainerResponse()


# ---- entry point ----------------------------------------------------------------------
def gather(args, s: devices.Settings):
    """(inventory, units by resource, notes): NVML on the real host when it works."""
    from nvbind.host import inventory
    root = os.path.abspath(args.root) if args.root not in ("", "/") else "/"
    backend, note = inventory.backend_for(root)
    try:
        inv = inventory.build(root, backend)
    finally:
        getattr(backend, "close", lambda: None)()
    if inv.driver_version is None:
        raise NvbindError(f"no NVIDIA driver found under {root}: nothing to advertise")
    profiles = nvml_mig_profiles(inv) if root == "/" and any(g.migs for g in inv.gpus) else {}
    units, notes = devices.plan(s, inv, topology(root, inv), profiles)
    return inv, units, ([note] if note else []) + notes


def main(args, ns) -> int:
    """`nvbind device-plugin`: args is nvbind.settings.Settings, ns argparse's namespace."""
    plugin_dir, dry = ns.plugin_dir, ns.dry_run
    s = devices.settings(args.config)
    inv, units, notes = gather(args, s)
    for n in notes:
        log(n)
    if dry:     # what would be advertised, as JSON; no gRPC
        import json
        print(json.dumps({"settings": s.to_json(), "resources": {
            r: [{"id": u.id, "selector": u.selector, "cdi": f"nvidia.com/gpu={u.cdi}",
                 "numa": u.numa} for u in us] for r, us in units.items()}, "notes": notes},
            indent=2))
        return 0
    try:
        import grpc  # noqa: F401
        from nvbind.k8s import api_pb2  # noqa: F401  (protobuf)
    except ImportError as e:
        raise NvbindError(f"this nvbind has no gRPC ({e}): the frozen device plugin is "
                          "nvbind-k8s (make dist builds it); from source, install the [k8s] "
                          "extra (grpcio, protobuf)") from None
    if not any(units.values()):
        raise NvbindError("no device to advertise (see the notes above)")
    if not os.path.isdir(plugin_dir):
        raise InputError(f"device plugin directory {plugin_dir} does not exist "
                         "(is this a Kubernetes node? mount it into the container)")
    plugin = Plugin(inv.root, plugin_dir, s, inv, units)
    stop = threading.Event()

    def on_signal(signum, _frame):
        log(f"{signal.Signals(signum).name}: stopping")
        stop.set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if inv.root == "/":
        threading.Thread(target=nvml_xid_watch, args=(plugin, stop), daemon=True,
                         name="nvml-xid").start()
    plugin.run(stop)
    log("stopped; sockets removed")
    return 0
