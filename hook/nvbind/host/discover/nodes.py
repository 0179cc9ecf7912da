"""Device nodes: numbers and mode read from the node itself, checked against /proc/devices."""

import os
import stat

from nvbind.sysio import root as fsroot
from nvbind.host.model import Node

# Which /proc/devices names may own each kind of node. The nvidia major is 195 on every
# driver so far, but nothing here assumes a number: nvidia-uvm's is dynamic.
OWNERS = {
    "nvidia": ("nvidia", "nvidia-frontend", "nvidiactl"),
    "nvidia-uvm": ("nvidia-uvm",),
    "nvidia-caps": ("nvidia-caps",),
    "drm": ("drm",),
}


def probe(root: str, path: str, owner: str, majors: dict[str, int] | None,
          skipped: list, why: str) -> Node | None:
    """A Node for `path` if it is a character device whose major belongs to `owner`."""
    host_path = fsroot.host(root, path)
    try:
        st = os.lstat(host_path)
    except FileNotFoundError:
        skipped.append((path, "not present"))
        return None
    except OSError as e:
        skipped.append((path, f"cannot stat: {e.strerror}"))
        return None
    if not stat.S_ISCHR(st.st_mode):
        skipped.append((path, "not a character device"))
        return None
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    if owner is None:
        note = f"{why}; char {major}:{minor}"
    elif majors is not None:
        allowed = {majors[n] for n in OWNERS[owner] if n in majors}
        if major not in allowed:
            names = "/".join(OWNERS[owner])
            skipped.append((path, f"major {major} is not {names}'s in /proc/devices"))
            return None
        note = f"{why}; char {major}:{minor}, major checked against /proc/devices"
    else:
        note = f"{why}; char {major}:{minor} (no /proc/devices to check against)"
    return Node(path=path, host_path=host_path, major=major, minor=minor,
                mode=stat.S_IMODE(st.st_mode), reason=note)


def drm_nodes(root: str, bus_id: str, majors, skipped) -> list[Node]:
    """card and render nodes of one GPU through /dev/dri/by-path/pci-<bus>-{card,render}."""
    out = []
    for kind in ("card", "render"):
        link = f"/dev/dri/by-path/pci-{bus_id}-{kind}"
        target = fsroot.resolve(root, link)
        if target is None:
            skipped.append((link, "no such by-path link"))
            continue
        if os.path.dirname(target) != "/dev/dri":
            skipped.append((link, f"does not lead to a node in /dev/dri (reaches {target})"))
            continue
        node = probe(root, target, "drm", majors, skipped, f"DRM {kind} node of {bus_id} via {link}")
        if node:
            out.append(node)
    return out
