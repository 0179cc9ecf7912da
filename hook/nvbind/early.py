"""What a hook needs before it knows it has work to do, without the `os` module.

The launcher starts Python without `site`, so nothing imports `os` before nvbind does, and
importing it costs a frozen hook ~1 ms (make bench: the empty program 7.1 ms, with
`import os` 8.1): `os.environ` is a MutableMapping, so `os` executes `_collections_abc`
and its some 25 abstract classes. A container that asks for no GPU needs only the
environment, a few system calls and plain path arithmetic. The modules on that path (cli,
settings, doors, doors.precreate, oci, log, sysio.trust) take them from `posix`, the
built-in module `os` wraps (the same functions, the same errors), and from here; a door
with work to do imports `os` as usual.
"""

import posix
import sys


def getenv(name: str) -> str | None:
    """os.environ.get(name). Once `os` is loaded, from os.environ (it may have been changed
    since the start); before, from the environment the process started with (posix.environ,
    as os.environ is made from it: only os changes the environment)."""
    os = sys.modules.get("os")
    if os is not None:
        return os.environ.get(name)
    value = posix.environ.get(fsencode(name))
    return None if value is None else value.decode(sys.getfilesystemencoding(),
                                                   sys.getfilesystemencodeerrors())


def fsencode(path: str) -> bytes:
    """os.fsencode for a str."""
    return path.encode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())


def abspath(path: str) -> str:
    """os.path.abspath(path); without `os` when the path is absolute and already normal
    (no empty, "." or ".." part, no trailing slash), as a hook's default paths are."""
    if path.startswith("/") and "//" not in path and "/." not in path \
            and (path == "/" or not path.endswith("/")):
        return path
    import os
    return os.path.abspath(path)


def join(head: str, tail: str) -> str:
    """os.path.join(head, tail), for two parts."""
    if tail.startswith("/") or not head:
        return tail
    return head + tail if head.endswith("/") else f"{head}/{tail}"


def dirname(path: str) -> str:
    """os.path.dirname(path)."""
    head = path[:path.rfind("/") + 1]
    return head.rstrip("/") if head.strip("/") else head
