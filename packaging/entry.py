"""PyInstaller entry point: the same main() as the `nvbind` console script."""
from nvbind.cli import main

raise SystemExit(main())
