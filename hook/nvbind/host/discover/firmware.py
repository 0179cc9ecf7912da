"""GSP firmware of the running driver. It goes to every GPU container, whatever its
capabilities (NVIDIA's lookup_firmwares is not tied to one): see Inventory.files_for."""

import os

from nvbind.host.discover.common import _regular
from nvbind.host.model import File
from nvbind.sysio import root as fsroot

FIRMWARE_DIR = "/lib/firmware/nvidia/{version}"


def firmware(root, version, skipped) -> list[File]:
    files: list[File] = []
    fw = FIRMWARE_DIR.format(version=version)
    try:
        names = sorted(os.listdir(fsroot.host(root, fw))) if fw else []
    except OSError:
        names = []
        skipped.append((fw, "no GSP firmware for this driver version"))
    for name in names:
        if name.endswith(".bin") and _regular(root, f"{fw}/{name}"):
            files.append(File("firmware", "utility", f"{fw}/{name}", fsroot.host(root, f"{fw}/{name}"),
                              f"GSP firmware of driver {version}"))
    return files
