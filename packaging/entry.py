"""PyInstaller entry point: the same main() as the `nvbind` console script."""
import os
import sys

if getattr(sys, "frozen", False):
    # ctypes ships outside the module graph (packaging/pyi_options.py): found from here on
    sys.path.append(os.path.join(sys._MEIPASS, "nvbind_lazy"))

from nvbind.cli import main  # noqa: E402

raise SystemExit(main())
