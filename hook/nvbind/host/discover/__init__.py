"""Host discovery, one concern per module (NVIDIA's internal/discover is the example, minus
its factories): nodes (device nodes), libraries, binaries, firmware, graphics, sockets.

`discover` gathers every driver file the given capabilities need, sorted by path."""

from nvbind.core.capabilities import CAPABILITIES, DEFAULT_CAPABILITIES
from nvbind.host.discover.common import machine_arch
from nvbind.host.model import File

__all__ = ["CAPABILITIES", "DEFAULT_CAPABILITIES", "discover", "machine_arch"]


def discover(root, version, arch, capabilities, skipped) -> list[File]:
    from nvbind.host.discover import binaries, firmware, graphics, libraries, sockets
    caps = set(capabilities)
    files, native = libraries.libraries(root, version, arch, caps, skipped)
    files += libraries.own_version(root, arch, caps, native, skipped)
    files += binaries.binaries(root, caps, skipped)
    files += firmware.firmware(root, version, skipped)
    files += graphics.graphics(root, version, caps, skipped)
    if "ngx" in caps:
        files += graphics.ngx(root, arch, files, skipped)
    files += sockets.sockets(root, caps, skipped)
    return sorted(files, key=lambda f: (f.path, f.capability))
