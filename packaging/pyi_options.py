"""PyInstaller options shared by nvbind.spec and floor.spec (the benchmark's floor), so
that the floor is 'an empty program frozen exactly as nvbind is'."""

# Modules nvbind never uses; leaving them out keeps the file and the start small.
EXCLUDES = ["tkinter", "unittest", "pydoc", "doctest", "pdb", "lib2to3", "sqlite3", "xmlrpc",
            "email", "http", "ssl", "asyncio", "multiprocessing", "concurrent", "curses",
            "distutils", "setuptools", "pip", "pkg_resources", "bz2", "lzma", "readline"]

# Runtime hooks PyInstaller adds that nvbind does not need. pyi_rth_inspect imports
# inspect and zipfile and lists base_library.zip on every start (to make
# inspect.getsourcefile work in frozen programs, which nvbind never calls): ~15 ms.
DROP_RTHOOKS = {"pyi_rth_inspect"}

EXE_OPTIONS = dict(strip=True, upx=False, console=True)

# One-dir builds keep modules as .pyc files beside the executable instead of in the PYZ
# archive: measured ~2 ms faster per run (the standard path importer, no decompression).
NOARCHIVE = True


def drop_rthooks(scripts):
    return [s for s in scripts if s[0] not in DROP_RTHOOKS]
