"""The frozen program's entry: importing this module runs nvbind and leaves the process.

Both frozen builds run it: the one-dir tree's launcher (packaging/frontend/nvbind.c)
imports it, and PyInstaller's one-file build runs it through packaging/entry.py.

Every file nvbind wrote is closed by then (atomic writes, the log line) and no thread or
atexit handler is left, so the process leaves without the interpreter's teardown (freeing
every module and object: ~3 ms of each hook run), after the last of stdout and stderr; a
flush that fails exits 120, as the interpreter's own exit does.

The cyclic garbage collector is off from here: a hook or shim process lives for
milliseconds and ends through os._exit, and the collector's passes over the objects its
imports create cost each GPU precreate ~0.2 ms (make bench). The admin verbs, some of
which run for days (metrics --listen, device-plugin), turn it back on (cli.run).
"""
import gc
import posix       # not os: no hook imports it before it has work (nvbind.early)
import sys

gc.disable()

from nvbind.cli import main

_rc = main()
try:
    for _stream in (sys.stdout, sys.stderr):
        if _stream is not None:         # None: started with that descriptor closed
            _stream.flush()
except (OSError, ValueError):
    _rc = _rc or 120
posix._exit(_rc if isinstance(_rc, int) else 1)
