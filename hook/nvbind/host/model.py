"""Plain data for the host inventory. Every item says why it is there."""

from nvbind.record import Record


class Node(Record):
    """A character device node, with numbers read from the node itself.

    path: as the container sees it (relative to the host root); host_path: where it is
    on this machine; mode: permission bits.
    """

    __slots__ = ("path", "host_path", "major", "minor", "mode", "reason")


class Mig(Record):
    """gpu: parent GPU index; index: the N of "gpu:N"; uuid: NVML only (None from procfs);
    caps: /dev/nvidia-caps/nvidia-capN paths for GI and CI access."""

    __slots__ = ("gpu", "index", "gi", "ci", "uuid", "caps", "procs")
    DEFAULTS = {"procs": ()}


class Gpu(Record):
    """bus_id: 0000:07:00.0 (lower case, 4-digit domain); node: /dev/nvidiaN if usable."""

    __slots__ = ("index", "minor", "uuid", "bus_id", "model", "node", "drm", "migs", "arch", "brand")
    DEFAULTS = {"drm": (), "migs": (), "arch": None, "brand": None}


class File(Record):
    """A host file to bind into containers. kind: library | binary | firmware | socket |
    config | display; capability: utility | compute | video | graphics | display | ngx |
    compat32:<base> (32-bit build of a base capability's library); path: container path."""

    __slots__ = ("kind", "capability", "path", "host_path", "reason", "soname")
    DEFAULTS = {"soname": None}


class GpuRecord(Record):
    """What a GPU backend (NVML or procfs) reports for one GPU; migs: ((gi, ci, uuid), ...)."""

    __slots__ = ("minor", "uuid", "bus_id", "model", "migs", "arch", "brand")
    DEFAULTS = {"migs": (), "arch": None, "brand": None}


class Inventory(Record):
    """nodes: by container path; skipped: [(item, reason)]."""

    __slots__ = ("root", "backend", "driver_version", "gpus", "nodes", "files", "skipped", "notes",
                 "cuda_version", "mig_mgmt", "mps")
    DEFAULTS = {"gpus": list, "nodes": dict, "files": list, "skipped": list, "notes": list,
                "cuda_version": None, "mig_mgmt": dict, "mps": dict}
    FROZEN = False

    def files_for(self, capabilities) -> list[File]:
        """The files for a container with these capabilities; GSP firmware for every one;
        32-bit libraries (capability compat32:<base>) with compat32 and their base."""
        caps = set(capabilities)
        out = []
        for f in self.files:
            c = f.capability
            if c.startswith("compat32:"):
                if "compat32" in caps and c[9:] in caps:
                    out.append(f)
            elif c in caps or f.kind == "firmware":
                out.append(f)
        return out

    def to_json(self) -> dict:
        return {
            "root": self.root,
            "backend": self.backend,
            "driver_version": self.driver_version,
            "gpus": [g.to_json() for g in self.gpus],
            "nodes": [n.to_json() for n in sorted(self.nodes.values(), key=lambda n: n.path)],
            "files": [f.to_json() for f in self.files],
            "skipped": [{"item": i, "reason": r} for i, r in self.skipped],
            "notes": list(self.notes),
            "cuda_version": self.cuda_version,
            "mig_mgmt": dict(self.mig_mgmt),
            "mps": dict(self.mps),
        }
