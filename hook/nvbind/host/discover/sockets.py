"""IPC sockets: nvidia-persistenced, the fabric manager."""

import os
import stat

from nvbind.host.model import File
from nvbind.sysio import root as fsroot

SOCKETS = {
    "utility": ("/run/nvidia-persistenced/socket",),
    "compute": ("/run/nvidia-fabricmanager/socket",),
}


def sockets(root, caps, skipped) -> list[File]:
    files: list[File] = []
    for cap, paths in SOCKETS.items():
        if cap not in caps:
            continue
        for p in paths:
            try:
                st = os.lstat(fsroot.host(root, p))
            except OSError:
                skipped.append((p, "IPC socket/directory not present"))
                continue
            if stat.S_ISSOCK(st.st_mode) or stat.S_ISDIR(st.st_mode):
                files.append(File("socket", cap, p, fsroot.host(root, p),
                                  "IPC " + ("directory" if stat.S_ISDIR(st.st_mode) else "socket")))
            else:
                skipped.append((p, "neither a socket nor a directory"))
    return files
