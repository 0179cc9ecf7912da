"""What a container is granted, decided before the host is looked at (see nvbind.decide).

`core.edits` turns a Grant and the host's inventory into ContainerEdits; it never reads
the request, the profile selection or the configuration itself."""

from nvbind.record import Record


class Grant(Record):
    """devices: "all" or selectors; source: where the device list came from;
    capabilities: the final driver capabilities; profile: the Profile whose env, mounts and
    devices apply; isolation / memory_limit / mps_thread_percentage: the final values;
    reasons: why each of them is what it is."""

    __slots__ = ("devices", "source", "capabilities", "profile", "isolation", "memory_limit",
                 "mps_thread_percentage", "requires", "mig_config", "mig_monitor", "reasons")
    DEFAULTS = {"isolation": "shared", "memory_limit": None, "mps_thread_percentage": None,
                "requires": (), "mig_config": False, "mig_monitor": False, "reasons": ()}
