"""One JSON line per hook invocation, appended to the log file (env NVBIND_LOG or --log).

Engines often drop a hook's stderr (podman prints only "exit status 2"), so the file is
where an operator finds out why a container did not get its GPU.
"""

import os
import sys
import time


def record(path: str | None, entry: dict) -> None:
    if not path:
        return
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **entry}
    from nvbind import fastjson
    line = (fastjson.dumps(entry, sort_keys=True) + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                     0o640)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    except OSError as e:
        print(f"nvbind: warning: cannot write log {path}: {e.strerror}", file=sys.stderr)
