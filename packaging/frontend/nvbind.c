/* nvbind: the one-dir tree's entry point. It starts Python (the interpreter is linked
 * into this file from the building Python's static libpython, as Debian links its own
 * python3.X: pyi_options.build_launcher says why) through CPython's public PEP 587
 * initialisation API, with the tree's standard library, and runs the frozen program: the
 * module ENTRY_MODULE, whose import runs nvbind and leaves through os._exit
 * (nvbind/frozen.py).
 *
 * It takes the place of PyInstaller's one-dir bootloader in the tree (nvbind.spec builds
 * it; dist/nvbind, the one-file build, keeps PyInstaller's own). Every container start
 * runs nvbind once or twice, and that bootloader spent ~2.5 ms of each start before
 * Python ran (make bench, "F_frozen"): it executes itself a second time to put _internal/
 * on LD_LIBRARY_PATH, reads its archive's table of contents, and unpacks and runs its
 * own bootstrap modules (with zlib and _struct) before the program's first line. Here
 * the libraries in _internal/ are found through RUNPATHs set at build time ($ORIGIN,
 * pyi_options.relocatable_tree) instead, and Python starts once.
 *
 * What Python is told, all fixed here (none of it from the environment):
 *   - the isolated configuration: no PYTHON* variable is read (PYTHONPATH, PYTHONHOME,
 *     PYTHONSTARTUP, PYTHONINSPECT...), no user or site directory, no script directory on
 *     sys.path, the command line is not parsed as Python's own;
 *   - sys.path: _internal/python3.X/lib-dynload, _internal, _internal/nvbind_lazy (the
 *     tree's modules only); no bytecode is written;
 *   - UTF-8 mode, -OO (the tree's modules were compiled with optimize=2), stdio buffered
 *     and configured as PyInstaller configures it, Python's signal handlers installed;
 *   - sys.executable this file's real path (/proc/self/exe), sys.frozen True and
 *     sys._MEIPASS _internal/, as PyInstaller's one-dir bootloader sets them.
 * Nothing from the image or the container is involved: the hook runs from the host.
 *
 * One module of nvbind's own is built in: _nvbind_sys (nvbind_sys.c), the raw system
 * call, so that no hook loads ctypes for one.
 *
 * nvbind's own modules are frozen (FROZEN_MODULES): CPython's frozen-module table, as
 * for its own os, codecs and io, which build_launcher in packaging/pyi_options.py
 * generates from the tree's .pyc files. A hook run imports some 25 of them, and each
 * import through the path finder stats, opens and reads a file in Python code (~45 us,
 * ~1 ms of a GPU request). The table's entries read their code from one file,
 * _internal/nvbind.frozen (pread into a buffer freed once unmarshalled), rather than
 * from this file's mapped pages: those would stay in the hook's memory (~0.3 MiB more
 * peak RSS for the createContainer hook). sys._stdlib_dir is _internal/, so that each
 * frozen module's __file__ and each frozen package's __path__ name their place in the
 * tree (nvbind/data/ is found beside them), as CPython's frozen importer derives them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#ifndef ENTRY_MODULE
#define ENTRY_MODULE "nvbind.frozen"
#endif
#define STR_(x) #x
#define STR(x) STR_(x)
#define DYNLOAD "python" STR(PY_MAJOR_VERSION) "." STR(PY_MINOR_VERSION) "/lib-dynload"

#ifdef FROZEN_MODULES
#include <marshal.h>
#include <fcntl.h>
#include <sys/stat.h>

extern const struct _frozen nvbind_frozen_modules[];
extern const unsigned char nvbind_frozen_token[16];     /* the data file's first bytes */
extern const long nvbind_frozen_size;                   /* and its size */
PyObject *nvbind_frozen_load(long off, int size);
static char frozen_path[PATH_MAX];
static int frozen_fd = -1;

static PyObject *frozen_error(const char *what) {
    return PyErr_Format(PyExc_ImportError, "nvbind: %s: %s", frozen_path, what);
}

/* The code object of a frozen module: SIZE bytes at OFF in the data file (the table's
 * get_code functions, generated, call this). The file is opened once, without following a
 * link, and must be a regular file of this build: its size and its first 16 bytes (a
 * digest of the rest, written by the build) are the ones compiled in here. That check is
 * against a tree mixed from two builds, not an integrity check: the tree is root's, as
 * trusted as this file. Its descriptor is kept above stdio (a hook started with stdin or
 * stdout closed would get 0 or 1, which a forked child's stdio setup replaces). */
PyObject *nvbind_frozen_load(long off, int size) {
    if (frozen_fd < 0) {
        unsigned char token[sizeof nvbind_frozen_token];
        struct stat st;
        int fd = open(frozen_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0)
            return frozen_error(strerror(errno));
        if (fd < 3) {
            int high = fcntl(fd, F_DUPFD_CLOEXEC, 3);
            close(fd);
            if (high < 0)
                return frozen_error(strerror(errno));
            fd = high;
        }
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size != nvbind_frozen_size
            || pread(fd, token, sizeof token, 0) != (ssize_t)sizeof token
            || memcmp(token, nvbind_frozen_token, sizeof token) != 0) {
            close(fd);
            return frozen_error("not the file this launcher was built with");
        }
        frozen_fd = fd;
    }
    char *buf = PyMem_RawMalloc(size);
    if (buf == NULL)
        return PyErr_NoMemory();
    ssize_t got = 0;
    while (got < size) {
        ssize_t r = pread(frozen_fd, buf + got, size - got, off + got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            PyMem_RawFree(buf);
            return frozen_error(r < 0 ? strerror(errno) : "short file");
        }
        got += r;
    }
    PyObject *code = PyMarshal_ReadObjectFromString(buf, size);
    PyMem_RawFree(buf);
    if (code != NULL && !PyCode_Check(code)) {
        Py_DECREF(code);
        return frozen_error("not a code object");
    }
    return code;
}
#endif

PyMODINIT_FUNC PyInit__nvbind_sys(void);     /* nvbind_sys.c */

static void die(const char *what) {
    fprintf(stderr, "nvbind: error: %s\n", what);
    fflush(stderr);
    _exit(1);
}

static void check(PyStatus st, PyConfig *c) {
    if (PyStatus_Exception(st)) {
        PyConfig_Clear(c);
        Py_ExitStatusException(st);
    }
}

static void add_path(PyConfig *c, const char *path) {
    wchar_t *w = Py_DecodeLocale(path, NULL);
    if (w == NULL)
        die("cannot decode the tree's path");
    check(PyWideStringList_Append(&c->module_search_paths, w), c);
    PyMem_RawFree(w);
}

int main(int argc, char **argv) {
    char exe[PATH_MAX], home[PATH_MAX], path[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0 || (size_t)n >= sizeof exe - 1)
        die("cannot read /proc/self/exe");
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash == NULL
        || snprintf(home, sizeof home, "%.*s/_internal", (int)(slash - exe), exe) >= (int)sizeof home)
        die("path too long");

    PyPreConfig pre;
    PyPreConfig_InitIsolatedConfig(&pre);
    pre.utf8_mode = 1;
    PyStatus st = Py_PreInitialize(&pre);
    if (PyStatus_Exception(st))
        Py_ExitStatusException(st);

    PyConfig c;
    PyConfig_InitIsolatedConfig(&c);
    c.site_import = 0;
    c.write_bytecode = 0;
    c.optimization_level = 2;
    c.parse_argv = 0;
    c.pathconfig_warnings = 0;
    c.configure_c_stdio = 1;
    c.buffered_stdio = 1;
    c.install_signal_handlers = 1;
    check(PyConfig_SetBytesString(&c, &c.program_name, exe), &c);
    check(PyConfig_SetBytesString(&c, &c.executable, exe), &c);
    check(PyConfig_SetBytesString(&c, &c.home, home), &c);
    c.module_search_paths_set = 1;
    if (snprintf(path, sizeof path, "%s/" DYNLOAD, home) >= (int)sizeof path)
        die("path too long");
    add_path(&c, path);
    add_path(&c, home);
    if (snprintf(path, sizeof path, "%s/nvbind_lazy", home) >= (int)sizeof path)
        die("path too long");
    add_path(&c, path);
    check(PyConfig_SetBytesArgv(&c, argc, argv), &c);
#ifdef FROZEN_MODULES
    if (snprintf(frozen_path, sizeof frozen_path, "%s/nvbind.frozen", home) >= (int)sizeof frozen_path)
        die("path too long");
    PyImport_FrozenModules = nvbind_frozen_modules;
#endif
    if (PyImport_AppendInittab("_nvbind_sys", PyInit__nvbind_sys) < 0)
        die("cannot register _nvbind_sys");
    check(Py_InitializeFromConfig(&c), &c);
    PyConfig_Clear(&c);

    PyObject *meipass = PyUnicode_DecodeFSDefault(home);
    if (meipass == NULL || PySys_SetObject("frozen", Py_True) < 0
        || PySys_SetObject("_MEIPASS", meipass) < 0
        || PySys_SetObject("_stdlib_dir", meipass) < 0) {
        PyErr_Print();
        _exit(1);
    }
    Py_DECREF(meipass);

    /* the entry module runs the program and leaves through os._exit; an exception out of
     * it (SystemExit included) ends the way the interpreter ends on one */
    PyObject *m = PyImport_ImportModule(ENTRY_MODULE);
    if (m == NULL) {
        if (PyErr_ExceptionMatches(PyExc_SystemExit))
            PyErr_Print();      /* exits with its code */
        /* anything else (nvbind catches its own errors: this is the tree itself failing)
         * is one line, as nvbind reports every error */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        PyObject *text = value != NULL ? PyObject_Str(value) : NULL;
        const char *msg = text != NULL ? PyUnicode_AsUTF8(text) : NULL;
        fprintf(stderr, "nvbind: error: internal: %s: %s\n",
                type != NULL ? ((PyTypeObject *)type)->tp_name : "error", msg != NULL ? msg : "");
        fflush(stderr);
        _exit(1);
    }
    Py_DECREF(m);
    return Py_FinalizeEx() < 0 ? 120 : 0;
}
