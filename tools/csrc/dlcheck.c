/* dlcheck LIB...: dlopen each library (by soname or path) the way a program would, print
 * "OK <lib>" or "FAIL <lib>: <dlerror>"; exit 1 if any failed. Compiled on the host for the
 * real-package tests (tools/realhost.py) and run only inside containers. */
#include <dlfcn.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int bad = 0;
    for (int i = 1; i < argc; i++) {
        void *h = dlopen(argv[i], RTLD_NOW | RTLD_LOCAL);
        if (h) {
            printf("OK %s\n", argv[i]);
        } else {
            printf("FAIL %s: %s\n", argv[i], dlerror());
            bad = 1;
        }
    }
    /* _exit: the libraries' exit handlers are not what is checked here. Without a kernel
     * driver (these tests' simulated hosts), NVIDIA 535's libEGL_nvidia and libGLX_nvidia
     * loaded together with the EGL external platforms (egl-gbm, egl-wayland) crash in
     * their exit handlers; each loads, and each pair without both GLX and EGL exits cleanly. */
    fflush(stdout);
    _exit(bad);
}
