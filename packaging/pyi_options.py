"""PyInstaller options shared by nvbind.spec and floor.spec (the benchmark's floor), so
that the floor is 'an empty program frozen exactly as nvbind is'."""

# Modules nvbind never uses; leaving them out keeps the file and the start small.
EXCLUDES = ["tkinter", "unittest", "pydoc", "doctest", "pdb", "lib2to3", "sqlite3", "xmlrpc",
            "email", "http", "ssl", "asyncio", "multiprocessing", "concurrent", "curses",
            "distutils", "setuptools", "pip", "pkg_resources", "bz2", "lzma", "readline", "ctypes"]

# The Kubernetes device plugin's gRPC stack (grpcio's cygrpc alone is 17 MB stripped, and it
# imports asyncio, ssl and concurrent.futures): left out of dist/nvbind and the one-dir tree,
# which must stay under the size target; dist/nvbind-k8s carries it (nvbind.spec).
GRPC = ["grpc", "google.protobuf", "grpc_tools"]
GRPC_NEEDS = ["asyncio", "concurrent", "ssl"]
# what grpc's compiled cygrpc imports, which PyInstaller cannot see in a binary module
GRPC_HIDDEN = ["pkgutil", "importlib.util", "asyncio", "ssl", "concurrent.futures",
               "traceback", "textwrap", "linecache"]

# Runtime hooks PyInstaller adds that nvbind does not need. pyi_rth_inspect imports
# inspect and zipfile and lists base_library.zip on every start (to make
# inspect.getsourcefile work in frozen programs, which nvbind never calls): ~15 ms.
DROP_RTHOOKS = {"pyi_rth_inspect"}

EXE_OPTIONS = dict(strip=True, upx=False, console=True)

# ctypes is left out of the module graph and shipped beside it instead (lazy_ctypes below):
# when ctypes is importable at start-up, PyInstaller's bootstrap (pyimod03_ctypes) imports
# it, with _ctypes and libffi, on every start (~3 ms of a ~25 ms hook run). nvbind needs
# ctypes only on the live path and for NVML, which find it once entry.py has put the
# directory on sys.path.
LAZY_DIR = "nvbind_lazy"


def lazy_ctypes(workdir):
    """[(src, dest dir)] datas: the stdlib ctypes package with -OO bytecode beside it."""
    import os
    import py_compile
    import shutil
    import sysconfig
    src = os.path.join(sysconfig.get_paths()["stdlib"], "ctypes")
    dst = os.path.join(workdir, LAZY_DIR, "ctypes")
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("test", "__pycache__", "wintypes.py", "_aix.py"))
    out = []
    for d, _, files in os.walk(dst):
        for f in files:
            if f.endswith(".py"):
                py = os.path.join(d, f)
                py_compile.compile(py, optimize=2, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        rel = os.path.relpath(d, os.path.dirname(os.path.dirname(dst)))
        for f in os.listdir(d):
            if os.path.isfile(os.path.join(d, f)):
                out.append((os.path.join(d, f), rel))
        pyc = os.path.join(d, "__pycache__")
        if os.path.isdir(pyc):
            out += [(os.path.join(pyc, f), os.path.join(rel, "__pycache__")) for f in os.listdir(pyc)]
    return out

# One-dir builds keep modules as .pyc files beside the executable instead of in the PYZ
# archive: measured ~2 ms faster per run (the standard path importer, no decompression).
NOARCHIVE = True


def drop_rthooks(scripts):
    return [s for s in scripts if s[0] not in DROP_RTHOOKS]


# --- the one-dir tree's entry point: packaging/frontend/nvbind.c instead of PyInstaller's
# one-dir bootloader (which costs every start ~2.5 ms: it executes itself twice and runs
# its own bootstrap before the program), with the interpreter linked into it (below).

def _elf(path):
    import os
    if os.path.islink(path) or not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def _needed(path):
    import re
    import subprocess
    out = subprocess.run(["readelf", "-dW", path], capture_output=True, text=True, check=True,
                         timeout=120).stdout
    return (re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out),
            bool(re.search(r"\((RPATH|RUNPATH)\)", out)))


def relocatable_tree(tree, patchelf):
    """Every ELF object in TREE/_internal that needs a library the tree carries finds it
    through a RUNPATH relative to itself ($ORIGIN/...), not through LD_LIBRARY_PATH (which
    PyInstaller's bootloader set by executing itself again); other RUNPATHs (the build
    machine's, e.g. /root/.pyenv/versions/X/lib) are removed. Returns {object: the
    libraries it needs}."""
    import os
    import subprocess
    internal = os.path.join(tree, "_internal")
    bundled = {n for n in os.listdir(internal) if ".so" in n and _elf(os.path.join(internal, n))}
    needs = {}
    for d, _dirs, files in os.walk(internal):
        for n in files:
            p = os.path.join(d, n)
            if not _elf(p):
                continue
            needed, has_path = _needed(p)
            needs[p] = needed
            if bundled & set(needed):
                rel = os.path.relpath(internal, d)
                rp = "$ORIGIN" if rel == "." else f"$ORIGIN/{rel}"
                subprocess.run([patchelf, "--set-rpath", rp, p], check=True, timeout=120)
            elif has_path:
                subprocess.run([patchelf, "--remove-rpath", p], check=True, timeout=120)
    return needs


def static_libpython():
    """(archive, link flags): the building Python's own static libpython (the same build
    as the libpython3.X.so PyInstaller collects: Debian's libpython3.X-dev, pyenv's
    config directory) and the libraries it needs (-l flags only: a build machine's -L
    or RUNPATH must not reach the tree)."""
    import os
    import sysconfig
    v = sysconfig.get_config_var
    archive = os.path.join(v("LIBPL") or "", v("LIBRARY") or "")
    if not os.path.isfile(archive) or not archive.endswith(".a"):
        raise SystemExit(f"nvbind.spec: no static libpython ({archive}) (Debian: apt-get install "
                         "python3-dev; `make setup` does)")
    libs = [f for var in ("LIBS", "MODLIBS", "SYSLIBS") for f in (v(var) or "").split()
            if f.startswith("-l")]
    return archive, list(dict.fromkeys(libs))


def frozen_modules(internal, package, out_c):
    """Freeze every module of PACKAGE in the tree (INTERNAL/PACKAGE/**/*.pyc, as PyInstaller
    compiled them, optimize=2) for the launcher (packaging/frontend/nvbind.c says why):
    their marshalled code into INTERNAL/nvbind.frozen (after a 16-byte digest of it, which
    the launcher compares with its own copy: a check against a tree mixed from two builds;
    the tree is root's and as trusted as the launcher), and
    into OUT_C CPython's frozen-module table (struct _frozen, cpython/import.h) whose
    entries read it from there (get_code; CPython takes an entry with no code bytes as
    excluded, so each names one placeholder byte). The .pyc files are removed. Returns
    the number of modules."""
    import hashlib
    import importlib.util
    import os
    found = {}
    for d, _dirs, files in os.walk(os.path.join(internal, package)):
        for n in files:
            if n.endswith(".pyc"):
                parts = os.path.relpath(os.path.join(d, n), internal)[:-4].split(os.sep)
                is_pkg = parts[-1] == "__init__"
                found[".".join(parts[:-1] if is_pkg else parts)] = (os.path.join(d, n), is_pkg)
    rows, loaders, blob = [], [], bytearray()
    for i, name in enumerate(sorted(found)):
        p, is_pkg = found[name]
        with open(p, "rb") as f:
            data = f.read()
        if data[:4] != importlib.util.MAGIC_NUMBER:
            raise SystemExit(f"nvbind.spec: {p} is not this Python's bytecode")
        code = data[16:]                # after the header: the marshalled code object
        loaders.append(f"static PyObject *g{i}(void) {{ return nvbind_frozen_load({16 + len(blob)}, {len(code)}); }}")
        rows.append(f'    {{"{name}", placeholder, 1, {int(is_pkg)}, g{i}}},')
        blob += code
        os.unlink(p)
    for d, _dirs, _files in sorted(os.walk(os.path.join(internal, package)), reverse=True):
        if not os.listdir(d):
            os.rmdir(d)         # left empty: its modules are frozen now
    token = hashlib.sha256(blob).digest()[:16]
    with open(os.path.join(internal, "nvbind.frozen"), "wb") as f:
        f.write(token + blob)
    with open(out_c, "w") as f:
        f.write("/* generated by packaging/pyi_options.py frozen_modules: do not edit */\n"
                "#include <Python.h>\n"
                "PyObject *nvbind_frozen_load(long off, int size);\n"
                f"const long nvbind_frozen_size = {16 + len(blob)};\n"
                "const unsigned char nvbind_frozen_token[16] = {" + ",".join(map(str, token)) + "};\n"
                "static const unsigned char placeholder[] = {1};\n" + "\n".join(loaders)
                + "\nconst struct _frozen nvbind_frozen_modules[] = {\n" + "\n".join(rows)
                + "\n    {NULL, NULL, 0, 0, NULL},\n};\n")
    return len(rows)


def _static_if_carried(flag, carried):
    """-lX as -l:libX.a when the tree carries a libX.so.* (a library the tree would have to
    bring for the launcher: Debian's libz and libexpat) and the linker finds libX.a."""
    import os
    import subprocess
    name = flag[2:]
    if name.startswith(":") or not any(n.startswith(f"lib{name}.so") for n in carried):
        return flag
    a = subprocess.run(["gcc", f"-print-file-name=lib{name}.a"], capture_output=True, text=True,
                       check=True, timeout=60).stdout.strip()
    return f"-l:lib{name}.a" if os.path.isabs(a) and os.path.isfile(a) else flag


def _undefined(paths):
    """The dynamic symbols that the ELF objects PATHS leave undefined (weak ones too)."""
    import subprocess
    syms = set()
    for p in paths:
        out = subprocess.run(["nm", "-D", "--undefined-only", p], capture_output=True, text=True,
                             check=True, timeout=120).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] in ("U", "w", "v"):
                syms.add(parts[1].split("@")[0])
    return syms


def build_launcher(tree, name, entry_module, source, keep_bootloader_as=None, freeze=None):
    """TREE/NAME: the launcher (SOURCE), running ENTRY_MODULE, in place of PyInstaller's
    bootloader executable of that name (kept as TREE/KEEP_BOOTLOADER_AS when given: the
    benchmark's floor shows what it costs).

    The interpreter is linked into the launcher from the building Python's static
    libpython, as Debian links its own /usr/bin/python3.X, not loaded from the tree's
    libpython3.X.so: a position-dependent executable needs no relocation of the
    interpreter's data at start (libpython3.11.so has ~37,000 relocations, and every page
    of its 1.2 MiB of writable data became private memory in every hook process), and the
    interpreter's calls into itself are direct, not through the PLT. Measured on the
    createContainer hook: peak RSS 9.0 -> 8.1 MiB; the empty program 0.6 ms faster and a
    precreate GPU request 1.4 ms (make bench). The tree then carries no libpython (kept
    only beside a kept bootloader, which loads it); its extension modules resolve the C
    API from the launcher, as they do from Debian's python3.X.

    The launcher exports only the symbols that the tree's ELF objects leave undefined
    (--dynamic-list), not all ~1,800 of the interpreter's (--export-dynamic): every symbol
    lookup the loader makes searches the executable first, through its hash table and
    symbols, and the smaller table keeps fewer of its pages resident. A library the
    interpreter links that the tree would carry for it alone (Debian's libpython3.X.a has
    pyexpat and zlib built in: libexpat, libz) is linked in statically when its archive
    is installed (libexpat1-dev, zlib1g-dev) and dropped from the tree: the launcher then
    maps no library but libc and libm. Measured (interleaved medians), built from Debian
    12's Python 3.11.2: createContainer hook 9.15 -> 8.85 MiB, the empty program 7.9 ->
    7.6 MiB; from python.org's 3.11.7 (only the export list applies): 8.2 -> 8.1, 7.1 -> 6.9.

    FREEZE: a package whose modules are frozen into the launcher (frozen_modules). The
    module _nvbind_sys (nvbind_sys.c, beside SOURCE) is always built in."""
    import glob
    import os
    import shutil
    import subprocess
    import sys
    import sysconfig
    import tempfile
    patchelf = shutil.which("patchelf")
    if patchelf is None:
        raise SystemExit("nvbind.spec: patchelf not found (Debian: apt-get install patchelf; "
                         "`make setup` does)")
    include = sysconfig.get_paths()["include"]
    if not os.path.exists(os.path.join(include, "Python.h")):
        raise SystemExit(f"nvbind.spec: no Python.h in {include} (Debian: apt-get install "
                         "python3-dev; `make setup` does)")
    archive, libs = static_libpython()
    internal = os.path.join(tree, "_internal")
    needs = relocatable_tree(tree, patchelf)
    carried = {n for n in os.listdir(internal) if ".so" in n and _elf(os.path.join(internal, n))}
    libs = [_static_if_carried(f, carried) for f in libs]
    out = os.path.join(tree, name)
    if keep_bootloader_as:
        os.replace(out, os.path.join(tree, keep_bootloader_as))
    else:
        os.unlink(out)      # PyInstaller's one-dir bootloader
        for p, needed in needs.items():
            if any(n.startswith("libpython") for n in needed):
                raise SystemExit(f"nvbind.spec: {p} needs libpython, which the tree no longer carries")
        for p in glob.glob(os.path.join(internal, "libpython3*.so*")):
            os.unlink(p)    # nothing left loads it
    with tempfile.TemporaryDirectory(prefix="nvbind-launcher-") as work:
        extra = []
        if freeze:
            if sys.version_info[:2] != (3, 11):
                # CPython 3.11's frozen importer calls an entry's get_code for its code
                # (unmarshal_frozen_code, Python/import.c); other versions are not known
                # to, and the build refuses them rather than ship a launcher that cannot
                # import nvbind (tests/e2e/test_frozen.py would show it)
                raise SystemExit("nvbind.spec: freezing nvbind's modules is built for Python 3.11")
            extra = ["-DFROZEN_MODULES", os.path.join(work, "frozen.c")]
            if frozen_modules(internal, freeze, extra[1]) == 0:
                raise SystemExit(f"nvbind.spec: no modules of {freeze} in {internal}")
        # what the tree's extension modules need from the interpreter (a kept bootloader's
        # libpython is not loaded here); a name the launcher does not define is not exported
        left = [p for p in needs if os.path.exists(p)
                and not os.path.basename(p).startswith("libpython")]
        dynlist = os.path.join(work, "exports.list")
        with open(dynlist, "w") as f:
            f.write("{\n" + "".join(f"  {s};\n" for s in sorted(_undefined(left))) + "};\n")
        # Debian's hardening flags (dpkg-buildflags) but not PIE (see above; a lintian override)
        subprocess.run(["gcc", "-O2", "-s", "-Wall", "-Wextra", "-Werror", "-fstack-protector-strong",
                        "-D_FORTIFY_SOURCE=2", "-no-pie", "-Wl,-z,relro", "-Wl,-z,now",
                        f'-DENTRY_MODULE="{entry_module}"', f"-I{include}", "-o", out, source,
                        os.path.join(os.path.dirname(source), "nvbind_sys.c"), *extra,
                        "-Wl,--whole-archive", archive, "-Wl,--no-whole-archive", *libs,
                        f"-Wl,--dynamic-list={dynlist}"],
                       check=True, timeout=300)
    # a library now linked in that nothing left in the tree needs is not shipped
    static = {f[len("-l:"):-len(".a")] for f in libs if f.startswith("-l:") and f.endswith(".a")}
    wanted = {n for p, needed in needs.items() if os.path.exists(p) for n in needed}
    for n in carried:
        if n.split(".so")[0] in static and n not in wanted:
            os.unlink(os.path.join(internal, n))
    # a library the interpreter needs that the tree carries comes from _internal; with none
    # (libz and libexpat linked in, above), no RUNPATH (the loader would look there for libc
    # first)
    if any(os.path.exists(os.path.join(internal, n)) for n in _needed(out)[0]):
        subprocess.run([patchelf, "--set-rpath", "$ORIGIN/_internal", out], check=True, timeout=120)
