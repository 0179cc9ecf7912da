"""PyInstaller entry point (the one-file dist/nvbind and dist/nvbind-k8s): the same program
the one-dir tree's launcher runs, nvbind/frozen.py."""
import os
import sys

if getattr(sys, "frozen", False):
    # ctypes ships outside the module graph (packaging/pyi_options.py): found from here on
    sys.path.append(os.path.join(sys._MEIPASS, "nvbind_lazy"))

import nvbind.frozen  # noqa: E402,F401  (runs nvbind, and exits)
