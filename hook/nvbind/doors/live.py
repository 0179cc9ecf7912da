"""createRuntime / prestart: inject into the container the runtime has just built."""

import os

from nvbind.errors import InputError, NvbindError


def run(settings, rest: list[str]) -> int:
    from nvbind import decide, oci
    from nvbind.doors import check_leases, host, record, register_user, state_and_bundle, take_leases
    from nvbind.settings import next_value
    leases = []
    it = iter(rest)
    for a in it:
        if a == "--lease":
            leases.append(next_value(it, a))
        else:
            raise InputError(f"this hook stage takes only --lease KEY, got {a!r}")
    state, cfg, rootfs = state_and_bundle(settings)
    if leases:
        # the entry precreate, the shim or CDI added: the decision was made there
        take_leases(settings, leases, state, cfg.get("hostname"))
        return 0
    d = decide.decide(settings, cfg, host(settings))
    record(settings, d)
    ed = d.edits
    if ed is None or ed.empty:
        return 0
    from nvbind.settings import host_root, host_uid
    if not host_root():
        # rootless engines: no device cgroup of the container's own, no mknod; fail before
        # touching anything (the cgroup nvbind could reach is its caller's, or the root one)
        raise NvbindError(f"container {state['id']}: this hook stage runs without host root "
                          f"(uid {os.geteuid()}{' of a user namespace' if os.geteuid() == 0 else ''}, uid {host_uid()} on the host)"
                          " and cannot change the container's device cgroup or make device nodes; "
                          "use the precreate hook or CDI (--device nvidia.com/gpu=N) for rootless containers")
    check_leases(settings, ed)
    env = oci.env_map(cfg)
    # The process environment is fixed by now. Markers may be missing; the admin's limits
    # (CUDA_MPS_*) may not: refuse rather than start a container without them.
    unmet = [e for e in ed.env if e.enforced and not e.name.startswith("NVBIND_")
             and env.get(e.name) != e.value]
    if unmet:
        raise InputError(f"{', '.join(e.name for e in unmet)} must be set for isolation "
                         f"{ed.isolation!r} (profile {ed.profile!r}), and this stage cannot set "
                         "the environment: use precreate, the runtime shim or CDI")
    take_leases(settings, ed.leases, state, cfg.get("hostname"))
    if ed.isolation != "exclusive":
        register_user(settings, ed.keys, state, cfg.get("hostname"))
    not_applied = [e.name for e in ed.env if env.get(e.name) != e.value]
    if not_applied:
        settings.result["env_not_applied"] = not_applied
        from nvbind import log
        log.note(f"note: {', '.join(not_applied)} cannot be set at this stage (the process "
                 "environment is fixed); use precreate, the runtime shim or CDI for them")
    from nvbind.apply import live
    caps = set(d.grant.capabilities)
    settings.result["done"] = live.apply(state, rootfs, ed,
                                         d.host.driver_version if "compute" in caps else None,
                                         settings.config.get("ldconfig") or None)
    return 0
