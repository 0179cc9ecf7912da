"""One JSON line per hook invocation, appended to the log file (env NVBIND_LOG or --log).

Engines often drop a hook's stderr (podman prints only "exit status 2"), so the file is
where an operator finds out why a container did not get its GPU.
"""

import posix      # not os: every hook logs, most before they load it (nvbind.early)
import sys
import time


MAX_STRING = 1024     # characters of one logged string (a hostname, an error message)
MAX_ITEMS = 64        # items of one logged list or object


def bounded(v, depth: int = 0):
    """`v` with every string, list and object cut to a size a log line can afford: what a
    container sets (its hostname, its values in error messages) must not grow the log."""
    if isinstance(v, str):
        return v if len(v) <= MAX_STRING else f"{v[:MAX_STRING]}...({len(v) - MAX_STRING} more)"
    if depth > 8:
        return "..."
    if isinstance(v, (list, tuple)):
        out = [bounded(x, depth + 1) for x in v[:MAX_ITEMS]]
        return out + [f"...({len(v) - MAX_ITEMS} more)"] if len(v) > MAX_ITEMS else out
    if isinstance(v, dict):
        return {bounded(str(k), depth + 1): bounded(x, depth + 1)
                for k, x in list(v.items())[:MAX_ITEMS]}
    if isinstance(v, float) and v != v or v in (float("inf"), float("-inf")):
        return str(v)
    return v


# podman shows, of a failing hook's stderr, only the first line that matches one of these
# (libpod/oci_util.go getOCIRuntimeError, case-insensitive; all of it only at
# --log-level=debug): a warning worded so would stand in for nvbind's error line (a rootless
# user's hook that cannot write /var/log/nvbind.log showed "Permission denied" and nothing
# of why the container was refused). Warnings and notes name the errno instead.
_PODMAN_PICKS = (("permission denied", "EACCES"), ("operation not permitted", "EPERM"),
                 ("no such file or directory", "ENOENT"), ("executable file not found in",
                                                          "executable not found in"),
                 ("open executable", "opening the executable"))


def note(text: str) -> None:
    """One line of nvbind's own on stderr that is not the error (a warning, a note),
    worded so that podman still shows the error line when the hook fails."""
    low = text.lower()
    for phrase, instead in _PODMAN_PICKS:
        while (i := low.find(phrase)) >= 0:
            text = text[:i] + instead + text[i + len(phrase):]
            low = low[:i] + instead.lower() + low[i + len(phrase):]
    print(f"nvbind: {text}", file=sys.stderr)


def record(path: str | None, entry: dict) -> None:
    if not path:
        return
    entry = bounded({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **entry})
    from nvbind import fastjson
    line = (fastjson.dumps(entry, sort_keys=True) + "\n").encode()
    try:
        fd = posix.open(path, posix.O_WRONLY | posix.O_APPEND | posix.O_CREAT | posix.O_CLOEXEC
                        | posix.O_NOFOLLOW, 0o640)
        try:
            posix.write(fd, line)
        finally:
            posix.close(fd)
    except OSError as e:
        note(f"warning: cannot write log {path}: {e.strerror}")
