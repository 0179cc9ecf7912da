/* _nvbind_sys: the raw system call, as a module built into the tree's launcher
 * (nvbind.c registers it; pyi_options.build_launcher compiles it in).
 *
 * nvbind makes a few system calls Python 3.11's os module does not offer (unshare, mount,
 * setns, prctl, openat2, the new mount API, bpf, flock and memfd seals:
 * nvbind/sysio/syscalls.py). Through ctypes each hook that makes one loaded _ctypes and
 * libffi and built their types: ~0.6 MiB of the createContainer hook's peak RSS (which
 * must stay under NVIDIA's for the same work) and ~0.5 ms. This is the same call in ~60
 * lines; nvbind falls back to ctypes where the module is absent (source runs, dist/nvbind
 * through PyInstaller's bootloader).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <unistd.h>

#define MAX_ARGS 6

/* syscall(nr, *args) -> int: what the kernel returned, or -errno when the call failed
 * (the kernel's own convention; nvbind/sysio/syscalls.py raises OSError from it). Each of
 * up to six arguments is an int (passed as a C long), None (NULL), or an object with the
 * buffer protocol, passed by address: writable (bytearray) when it can be, so that the
 * kernel can fill it in, else read-only (bytes, which CPython keeps NUL-terminated: a
 * path). The buffers are held for the length of the call. */
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
        } else {
            if (PyObject_GetBuffer(o, &views[held], PyBUF_WRITABLE) < 0) {
                PyErr_Clear();
                if (PyObject_GetBuffer(o, &views[held], PyBUF_SIMPLE) < 0)
                    goto done;
            }
            a[i - 1] = (long)views[held++].buf;
        }
    }
    long r = syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    result = PyLong_FromLong(r == -1 ? -errno : r);
done:
    while (held > 0)
        PyBuffer_Release(&views[--held]);
    return result;
}

/* address(buffer) -> int: where a writable buffer's bytes are, for a pointer inside a
 * structure handed to the kernel (bpf's attributes). The caller keeps the object alive
 * and does not resize it while the kernel may use the address. */
static PyObject *sys_address(PyObject *self, PyObject *obj) {
    (void)self;
    Py_buffer view;
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

static struct PyModuleDef sys_module = {
    PyModuleDef_HEAD_INIT, "_nvbind_sys", NULL, -1, sys_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__nvbind_sys(void) {
    return PyModule_Create(&sys_module);
}
