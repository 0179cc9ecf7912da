"""What the device plugin advertises and what an allocation gives: pure functions.

Everything here is computed from (settings, inventory, facts the plugin gathered) and
touches neither the file system nor gRPC, so that the same decisions can be made, tested
and explained without a kubelet:

  settings(config)                    -> Settings ([device_plugin] table + the profile)
  plan(settings, inv, topology, ...)  -> {resource name: [Unit, ...]}
  advertise(units, absent, bad)       -> [(device ID, healthy, numa), ...]
  preferred(units, available, must, size) -> [device ID, ...]
  allocate(settings, inv, units, ids) -> Allocation (env, CDI names, mounts, annotations)

Resource names and MIG strategies follow NVIDIA's k8s-device-plugin (documented in its
README and in "MIG Support in Kubernetes", docs.nvidia.com/datacenter/cloud-native):
  none    every full GPU is nvidia.com/gpu; MIG instances are not advertised
  single  every GPU of the node has MIG on, all with the same profile; each MIG instance
          is one nvidia.com/gpu (a node with no MIG at all advertises its full GPUs)
  mixed   full GPUs are nvidia.com/gpu, each MIG instance is nvidia.com/mig-<profile>
          (e.g. nvidia.com/mig-1g.10gb)
Sharing follows nvbind's isolation (the [device_plugin] profile, else default_profile):
  shared     `replicas` IDs per device, "<id>::<k>" (as NVIDIA's time-slicing names them)
  exclusive  one ID per device
  virtual    `replicas` IDs per device, and the CUDA MPS client limits in the env
"""

from nvbind.errors import InputError
from nvbind.record import Record

HEALTHY, UNHEALTHY = "Healthy", "Unhealthy"      # constants.go of the v1beta1 API
DEFAULT_RESOURCE = "nvidia.com/gpu"
STRATEGIES = ("none", "single", "mixed")
MAX_ID = 63                                       # api.proto: Device.ID, at most 63 characters
DEFAULTS = {"resource": DEFAULT_RESOURCE, "mig_strategy": "none", "replicas": 1,
            "profile": None, "device_list": ["envvar", "cdi"], "poll_interval": 1.0}


class Settings(Record):
    """resource: name for full GPUs; isolation/replicas: from the profile and the table;
    device_list: what Allocate returns (envvar: NVIDIA_VISIBLE_DEVICES, cdi: CDI names)."""

    __slots__ = ("resource", "mig_strategy", "replicas", "isolation", "profile",
                 "mps_thread_percentage", "memory_limit", "mps_pipe_dir", "device_list",
                 "poll_interval")


class Unit(Record):
    """One schedulable device before sharing: a full GPU or a MIG instance.

    key: its device ID without a replica suffix (GPU or MIG UUID; "<GPU UUID>:mig<N>" for a
    MIG instance whose UUID only NVML knows); selector: what NVIDIA_VISIBLE_DEVICES names
    it by; cdi: its device name in the spec `nvbind cdi generate` writes; nodes: the /dev
    paths it needs (health); gpu: parent GPU index; numa: NUMA node or None; pci: the PCI
    path from the root complex to the GPU, as a tuple of bus ids (empty when unknown)."""

    __slots__ = ("key", "selector", "cdi", "uuid", "nodes", "gpu", "numa", "pci", "replica")
    DEFAULTS = {"numa": None, "pci": (), "replica": None}

    @property
    def id(self) -> str:
        return self.key if self.replica is None else f"{self.key}::{self.replica}"


class Allocation(Record):
    __slots__ = ("envs", "cdi_devices", "mounts", "annotations")


def settings(config: dict) -> Settings:
    """[device_plugin] with defaults; isolation and MPS limits from its profile."""
    from nvbind.core import profiles
    dp = dict(DEFAULTS)
    dp.update(config.get("device_plugin") or {})
    if dp["mig_strategy"] not in STRATEGIES:
        raise InputError(f"device_plugin.mig_strategy '{dp['mig_strategy']}' is not one of "
                         f"{', '.join(STRATEGIES)}")
    replicas = int(dp["replicas"])
    if replicas < 1:
        raise InputError("device_plugin.replicas must be at least 1")
    prof = profiles.resolve(dp["profile"], config)
    if prof.isolation == "exclusive" and replicas > 1:
        raise InputError(f"device_plugin.replicas = {replicas} with profile {prof.name}, whose "
                         "isolation is exclusive: one container per GPU cannot be shared")
    return Settings(resource=dp["resource"], mig_strategy=dp["mig_strategy"],
                    replicas=replicas, isolation=prof.isolation, profile=prof.name,
                    mps_thread_percentage=prof.mps_thread_percentage,
                    memory_limit=prof.memory_limit,
                    mps_pipe_dir=config.get("mps_pipe_dir", "/tmp/nvidia-mps"),
                    device_list=tuple(dp["device_list"]), poll_interval=float(dp["poll_interval"]))


def _gpu_unit(g, topo) -> Unit:
    t = topo.get(g.bus_id) or {}
    return Unit(key=g.uuid, selector=g.uuid, cdi=g.uuid, uuid=g.uuid, nodes=(g.node,),
                gpu=g.index, numa=t.get("numa"), pci=tuple(t.get("pci") or ()))


def _mig_unit(g, m, topo) -> Unit:
    t = topo.get(g.bus_id) or {}
    key = m.uuid or f"{g.uuid}:mig{m.index}"
    sel = m.uuid or f"{g.index}:{m.index}"
    return Unit(key=key, selector=sel, cdi=sel, uuid=m.uuid, nodes=(g.node, *m.caps),
                gpu=g.index, numa=t.get("numa"), pci=tuple(t.get("pci") or ()))


def mig_resource(profile: str) -> str:
    return f"nvidia.com/mig-{profile}"


def plan(s: Settings, inv, topology: dict | None = None,
         mig_profiles: dict | None = None) -> tuple[dict[str, list[Unit]], list[str]]:
    """{resource: [Unit with replicas applied]}, notes. topology: {bus_id: {"numa": int,
    "pci": (bus ids)}}; mig_profiles: {MIG key: "1g.10gb"} (NVML knows them, procfs not)."""
    topo, profs, notes = topology or {}, mig_profiles or {}, []
    gpus = [g for g in inv.gpus if g.node is not None]
    for g in inv.gpus:
        if g.node is None:
            notes.append(f"GPU {g.index} ({g.uuid}) has no usable device node: not advertised")
    out: dict[str, list[Unit]] = {}
    with_mig = [g for g in gpus if g.migs]
    if s.mig_strategy == "none" or not with_mig:
        if with_mig:
            notes.append("mig_strategy none: MIG instances are not advertised, their GPUs are")
        out[s.resource] = [_gpu_unit(g, topo) for g in gpus]
    elif s.mig_strategy == "single":
        if len(with_mig) != len(gpus):
            raise InputError("mig_strategy single needs MIG on every GPU of the node; GPU(s) "
                             + ", ".join(str(g.index) for g in gpus if not g.migs)
                             + " have none (use mixed)")
        units = [_mig_unit(g, m, topo) for g in gpus for m in g.migs]
        known = {profs[u.key] for u in units if u.key in profs}
        if len(known) > 1:
            raise InputError("mig_strategy single needs one MIG profile on the whole node; found "
                             + ", ".join(sorted(known)) + " (use mixed)")
        if len(known) < 1 or any(u.key not in profs for u in units):
            notes.append("MIG profiles unknown without NVML: not checked to be all the same")
        out[s.resource] = units
    else:   # mixed
        out[s.resource] = [_gpu_unit(g, topo) for g in gpus if not g.migs]
        for g in with_mig:
            for m in g.migs:
                u = _mig_unit(g, m, topo)
                prof = profs.get(u.key)
                if prof is None:
                    notes.append(f"MIG {g.index}:{m.index}: profile unknown (NVML gives it, "
                                 "procfs does not): not advertised under mig_strategy mixed")
                    continue
                out.setdefault(mig_resource(prof), []).append(u)
        if not out[s.resource]:
            del out[s.resource]
    n = s.replicas if s.isolation in ("shared", "virtual") else 1
    if n > 1:
        out = {r: [Unit(*[getattr(u, f) for f in Unit.__slots__[:-1]], replica=k)
                   for u in us for k in range(n)] for r, us in out.items()}
    for us in out.values():
        for u in us:
            if len(u.id) > MAX_ID:
                raise InputError(f"device ID {u.id} is longer than {MAX_ID} characters")
    return out, notes


def advertise(units: list[Unit], absent=frozenset(), bad=frozenset()) -> list[tuple]:
    """[(ID, healthy, numa)]: unhealthy when one of its nodes is absent or its key is in
    `bad` (NVML critical XID events)."""
    return [(u.id, not (set(u.nodes) & set(absent)) and u.key not in bad and u.uuid not in bad,
             u.numa) for u in units]


def _distance(a: Unit, b: Unit) -> int:
    if a.key == b.key:
        return 1000          # two replicas of one device: no more GPU for the container
    if a.gpu == b.gpu:
        return 0             # two MIG instances of one GPU: as close as it gets
    d = 0
    if a.numa is not None and b.numa is not None and a.numa != b.numa:
        d += 20
    if a.pci and b.pci:
        common = 0
        for x, y in zip(a.pci, b.pci):
            if x != y:
                break
            common += 1
        d += max(len(a.pci), len(b.pci)) - common
    return d


def preferred(units: list[Unit], available, must_include, size: int) -> list[str]:
    """GetPreferredAllocation: `must_include`, then the closest of `available` (same NUMA
    node and PCI switch first, replicas of a device already taken last), in the stable
    order of the plan otherwise."""
    by_id = {u.id: u for u in units}
    order = {u.id: i for i, u in enumerate(units)}
    chosen = [i for i in must_include if i in by_id]
    pool = sorted((i for i in set(available) - set(chosen) if i in by_id), key=order.get)
    while len(chosen) < size and pool:
        if chosen:
            best = min(pool, key=lambda i: (sum(_distance(by_id[i], by_id[c]) for c in chosen),
                                            order[i]))
        else:
            best = min(pool, key=lambda i: (_group_penalty(by_id[i], [by_id[p] for p in pool],
                                                           size), order[i]))
        chosen.append(best)
        pool.remove(best)
    return chosen


def _group_penalty(u: Unit, pool: list[Unit], size: int) -> int:
    """For the first pick: the cost of the `size - 1` closest others, so that a
    request lands where a close group of that size exists."""
    ds = sorted(_distance(u, o) for o in pool if o.id != u.id)
    return sum(ds[:max(0, size - 1)])


def allocate(s: Settings, units: list[Unit], ids, inv=None) -> Allocation:
    """What one container gets for the device IDs the kubelet chose."""
    by_id = {u.id: u for u in units}
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise InputError(f"unknown device ID(s): {', '.join(unknown)}")
    seen, picked = set(), []
    for i in ids:
        u = by_id[i]
        if u.key not in seen:        # two replicas of one device: that device once
            seen.add(u.key)
            picked.append(u)
    envs, mounts = {}, []
    if "envvar" in s.device_list:
        envs["NVIDIA_VISIBLE_DEVICES"] = ",".join(u.selector for u in picked)
    cdi = [f"nvidia.com/gpu={u.cdi}" for u in picked] if "cdi" in s.device_list else []
    annotations = {"nvbind.io/isolation": s.isolation}
    if s.profile and s.profile != "default":
        annotations["nvbind.io/profile"] = s.profile
    if s.isolation == "virtual":
        envs["CUDA_MPS_PIPE_DIRECTORY"] = s.mps_pipe_dir
        pct = s.mps_thread_percentage or max(1, 100 // s.replicas)
        envs["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(pct)
        if s.memory_limit:
            mb = max(1, s.memory_limit >> 20)
            envs["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] = ",".join(
                f"{k}={mb}M" for k in range(len(picked)))
        root = getattr(inv, "root", "/") if inv is not None else "/"
        host = s.mps_pipe_dir if root == "/" else root.rstrip("/") + s.mps_pipe_dir
        mounts.append((s.mps_pipe_dir, host, False))
    return Allocation(envs=envs, cdi_devices=tuple(cdi), mounts=tuple(mounts),
                      annotations=annotations)
