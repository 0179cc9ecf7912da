/* Runs inside a test container: opens device nodes, then dlopen()s libcuda.so.1 by soname
 * and calls into it. Prints one line per check; exit 0 only if libcuda loaded and ran. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char *errname(int e) {
    switch (e) {
    case ENXIO: return "ENXIO";
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    default: return strerror(e);
    }
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        int fd = open(argv[i], O_RDWR | O_CLOEXEC);
        if (fd >= 0) { printf("open %s: OK\n", argv[i]); close(fd); }
        else printf("open %s: %s\n", argv[i], errname(errno));
    }
    void *h = dlopen("libcuda.so.1", RTLD_NOW);
    if (!h) { printf("dlopen libcuda.so.1: FAILED %s\n", dlerror()); return 1; }
    int (*init)(unsigned int) = (int (*)(unsigned int))dlsym(h, "cuInit");
    int (*ver)(int *) = (int (*)(int *))dlsym(h, "cuDriverGetVersion");
    if (!init || !ver) { printf("dlsym: FAILED\n"); return 1; }
    int v = 0, r1 = init(0), r2 = ver(&v);
    printf("dlopen libcuda.so.1: OK cuInit=%d cuDriverGetVersion=%d version=%d\n", r1, r2, v);
    return r1 == 0 && r2 == 0 ? 0 : 1;
}
