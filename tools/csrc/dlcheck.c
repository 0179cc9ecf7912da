/* dlcheck LIB...: dlopen each library (by soname or path) the way a program would, print
 * "OK <lib>" or "FAIL <lib>: <dlerror>"; exit 1 if any failed. Compiled on the host for the
 * real-package tests (tools/realhost.py) and run only inside containers. */
#include <dlfcn.h>
#include <stdio.h>

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
    return bad;
}
