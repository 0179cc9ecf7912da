/* _nvbind_sys: the raw system call, as a module built into the tree's launcher
 * (nvbind.c registers it; pyi_options.build_launcher compiles it in).
 *
 * nvbind makes a few system calls Python 3.11's os module does not offer (unshare, mount,
 * setns, prctl, openat2, the new mount API, bpf, flock and memfd seals:
 * nvbind/sysio/syscalls.py). Through ctypes each hook that makes one loaded _ctypes and
 * libffi and built their types: ~0.15 MiB of the createContainer hook's peak RSS, which
 * must stay under NVIDIA's for the same work. This is the same call; nvbind falls back to
 * ctypes where the module is absent (source runs, dist/nvbind through PyInstaller's
 * bootloader).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_ARGS 6

/* syscall(nr, *args) -> int: what the kernel returned, or -errno when the call failed
 * (the kernel's own convention; nvbind/sysio/syscalls.py raises OSError from it). Each of
 * up to six arguments is an int (passed as a C long), None (NULL), bytes (by address,
 * read-only: CPython keeps them NUL-terminated, so a path ends where they end) or a
 * bytearray (by address, for the kernel to fill in); anything else is a TypeError. The
 * buffers are held (a bytearray cannot be resized) for the length of the call, which
 * runs without the GIL. */
static PyObject *sys_syscall(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    long a[MAX_ARGS] = {0};
    Py_buffer views[MAX_ARGS];
    int held = 0;
    PyObject *result = NULL;
    if (nargs < 1 || nargs > MAX_ARGS + 1)
        return PyErr_Format(PyExc_TypeError, "syscall takes a number and at most %d arguments",
                            MAX_ARGS);
    long nr = PyLong_AsLong(args[0]);
    if (nr == -1 && PyErr_Occurred())
        return NULL;
    for (Py_ssize_t i = 1; i < nargs; i++) {
        PyObject *o = args[i];
        if (o == Py_None) {
            a[i - 1] = 0;
        } else if (PyLong_Check(o)) {
            a[i - 1] = PyLong_AsLong(o);
            if (a[i - 1] == -1 && PyErr_Occurred())
                goto done;
        } else if (PyBytes_CheckExact(o) || PyByteArray_CheckExact(o)) {
            if (PyObject_GetBuffer(o, &views[held], PyByteArray_CheckExact(o) ? PyBUF_WRITABLE
                                                                              : PyBUF_SIMPLE) < 0)
                goto done;
            a[i - 1] = (long)views[held++].buf;
        } else {
            PyErr_Format(PyExc_TypeError, "syscall argument %zd: int, None, bytes or bytearray, "
                         "not %.100s", i, Py_TYPE(o)->tp_name);
            goto done;
        }
    }
    long r;
    int err;
    Py_BEGIN_ALLOW_THREADS
    r = syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    err = errno;
    Py_END_ALLOW_THREADS
    result = PyLong_FromLong(r == -1 ? -err : r);
done:
    while (held > 0)
        PyBuffer_Release(&views[--held]);
    return result;
}

/* address(bytearray) -> int: where its bytes are, for a pointer inside a structure handed
 * to the kernel (bpf's attributes). The caller keeps it alive and does not resize it
 * while the kernel may use the address. */
static PyObject *sys_address(PyObject *self, PyObject *obj) {
    (void)self;
    Py_buffer view;
    if (!PyByteArray_CheckExact(obj))
        return PyErr_Format(PyExc_TypeError, "address: a bytearray, not %.100s",
                            Py_TYPE(obj)->tp_name);
    if (PyObject_GetBuffer(obj, &view, PyBUF_WRITABLE) < 0)
        return NULL;
    PyObject *r = PyLong_FromVoidPtr(view.buf);
    PyBuffer_Release(&view);
    return r;
}

static PyMethodDef sys_methods[] = {
    {"syscall", (PyCFunction)(void (*)(void))sys_syscall, METH_FASTCALL,
     "syscall(nr, *args) -> result, or -errno"},
    {"address", sys_address, METH_O, "address(writable buffer) -> int"},
    {NULL, NULL, 0, NULL},
};

/* NR: the numbers of the calls nvbind makes, as this build's <sys/syscall.h> has them
 * (the launcher's own ABI) */
static const struct { const char *name; long nr; } numbers[] = {
    {"unshare", SYS_unshare}, {"mount", SYS_mount}, {"setns", SYS_setns},
    {"prctl", SYS_prctl}, {"flock", SYS_flock}, {"fcntl", SYS_fcntl}, {"bpf", SYS_bpf},
    {"open_tree", SYS_open_tree}, {"move_mount", SYS_move_mount}, {"openat2", SYS_openat2},
    {"mount_setattr", SYS_mount_setattr},
};

static int sys_exec(PyObject *m) {
    PyObject *nr = PyDict_New();
    if (nr == NULL)
        return -1;
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++) {
        PyObject *v = PyLong_FromLong(numbers[i].nr);
        if (v == NULL || PyDict_SetItemString(nr, numbers[i].name, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(nr);
            return -1;
        }
        Py_DECREF(v);
    }
    if (PyModule_AddObject(m, "NR", nr) < 0) {     /* steals nr only when it succeeds */
        Py_DECREF(nr);
        return -1;
    }
    return 0;
}

static struct PyModuleDef sys_module = {
    PyModuleDef_HEAD_INIT, "_nvbind_sys", NULL, -1, sys_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__nvbind_sys(void) {
    PyObject *m = PyModule_Create(&sys_module);
    if (m != NULL && sys_exec(m) < 0)
        Py_CLEAR(m);
    return m;
}
