"""PyInstaller entry point: the same main() as the `nvbind` console script."""
import os
import sys

if getattr(sys, "frozen", False):
    # ctypes ships outside the module graph (packaging/pyi_options.py): found from here on
    sys.path.append(os.path.join(sys._MEIPASS, "nvbind_lazy"))

from nvbind.cli import main  # noqa: E402

rc = main()
# Done: every file nvbind wrote is closed (atomic writes, the log line), no thread or atexit
# handler is left. Leave without the interpreter's teardown (freeing every module and
# object), which took ~3 ms of each hook run, after the last of stdout and stderr; a flush
# that fails exits 120, as the interpreter's own exit does.
try:
    sys.stdout.flush()
    sys.stderr.flush()
except (OSError, ValueError):
    rc = rc or 120
os._exit(rc if isinstance(rc, int) else 1)
