"""Plain data for the host inventory. Every item says why it is there."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Node:
    """A character device node, with numbers read from the node itself."""

    path: str          # path as the container sees it (relative to the host root)
    host_path: str     # where it is on this machine
    major: int
    minor: int
    mode: int          # permission bits
    reason: str


@dataclass(frozen=True)
class Mig:
    gpu: int           # parent GPU index
    index: int         # MIG device index on that GPU (the N of "gpu:N")
    gi: int
    ci: int
    uuid: str | None   # known to NVML only; None from procfs
    caps: tuple[str, ...]  # /dev/nvidia-caps/nvidia-capN paths for gi and ci access


@dataclass(frozen=True)
class Gpu:
    index: int
    minor: int
    uuid: str
    bus_id: str        # 0000:07:00.0, lower case, 4-digit domain
    model: str
    node: str | None   # /dev/nvidiaN if present and valid
    drm: tuple[str, ...] = ()
    migs: tuple[Mig, ...] = ()


@dataclass(frozen=True)
class File:
    """A host file (library, binary, firmware, socket, config) to bind into containers."""

    kind: str          # library | binary | firmware | socket | graphics | display
    capability: str    # utility | compute | video | graphics | display | ngx | compat32
    path: str          # container path
    host_path: str
    reason: str
    soname: str | None = None


@dataclass(frozen=True)
class GpuRecord:
    """What a GPU backend (NVML or procfs) reports for one GPU."""

    minor: int
    uuid: str
    bus_id: str
    model: str
    migs: tuple[tuple[int, int, str | None], ...] = ()  # (gi, ci, uuid)


@dataclass
class Inventory:
    root: str
    backend: str
    driver_version: str | None
    gpus: list[Gpu] = field(default_factory=list)
    nodes: dict[str, Node] = field(default_factory=dict)   # by container path
    files: list[File] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (item, reason)
    notes: list[str] = field(default_factory=list)

    def files_for(self, capabilities) -> list[File]:
        return [f for f in self.files if f.capability in capabilities]

    def to_json(self) -> dict:
        return {
            "root": self.root,
            "backend": self.backend,
            "driver_version": self.driver_version,
            "gpus": [asdict(g) for g in self.gpus],
            "nodes": [asdict(n) for n in sorted(self.nodes.values(), key=lambda n: n.path)],
            "files": [asdict(f) for f in self.files],
            "skipped": [{"item": i, "reason": r} for i, r in self.skipped],
            "notes": list(self.notes),
        }
