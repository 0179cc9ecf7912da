"""What a hook needs before it knows it has work to do, without the `os` module.

The launcher starts Python without `site`, so nothing imports `os` before nvbind does, and
importing it costs a frozen hook ~1 ms (make bench: the empty program 7.1 ms, with
`import os` 8.1): `os.environ` is a MutableMapping, so `os` executes `_collections_abc`
and its some 25 abstract classes (~0.25 MiB of the hook's memory too). A container that
asks for no GPU needs only the environment, a few system calls and plain path arithmetic,
and the createContainer entry every GPU container gets little more. The modules on those
two paths (cli, settings, doors, oci, log; sysio.trust, atomic, root, child, syscalls;
apply.leases, ldcache) take them from `posix`, the built-in module `os` wraps (the same
functions, the same errors), and from here; the other doors import `os` as usual.
tests/unit/test_cache.py fails if either path imports it.
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
    return split(path)[0]


def split(path: str) -> tuple[str, str]:
    """os.path.split(path)."""
    i = path.rfind("/") + 1
    head, tail = path[:i], path[i:]
    return (head.rstrip("/") if head.strip("/") else head), tail


def basename(path: str) -> str:
    """os.path.basename(path)."""
    return path[path.rfind("/") + 1:]


def isdir(path: str) -> bool:
    """os.path.isdir(path)."""
    return _is(path, 0o040000)


def isfile(path: str) -> bool:
    """os.path.isfile(path)."""
    return _is(path, 0o100000)


def _is(path, kind: int) -> bool:
    try:
        return posix.stat(path).st_mode & 0o170000 == kind      # S_IFMT
    except (OSError, ValueError):
        return False
