/* nvbind-runtime: the exec front end of nvbind's OCI runtime shim (doors/shim.py).
 *
 * docker and containerd call their runtime for every verb of every container (create,
 * start, state, kill, delete, ...), and only `create` and `run` can need nvbind. Starting
 * Python for the others costs ~15 ms each; this program looks at the verb and execs the
 * real runtime directly, and execs nvbind (Python) only when nvbind has something to do:
 *
 *   create/run whose bundle's config.json could ask for a GPU  ->  exec NVBIND ARGS
 *   everything else                                            ->  exec REAL ARGS
 *
 * "Could ask" is a conservative byte scan, the C twin of oci.may_request(): any of the
 * strings through which a config asks for a GPU (oci.TRIGGERS), any backslash (a JSON
 * escape can spell a trigger), any byte >= 0x80 (Python refuses non-UTF-8), a config that
 * cannot be read or is larger than oci.MAX_INPUT: all go to Python, which decides. Nothing
 * else of the config is parsed here.
 *
 * NVBIND is the `nvbind` beside this program's real path (the one-dir tree holds both).
 * REAL is resolved as shim.real_runtime() resolves it: NVBIND_RUNTIME (an absolute path,
 * a relative path with a '/', or a name on PATH), else runc on PATH; PATH is the
 * environment's, else /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; a
 * candidate must be executable, not a directory, and neither this program nor nvbind
 * (the same file: device and inode). When no real runtime is found, or anything here fails, nvbind (Python)
 * runs instead and reports the error the way it reports errors (runc's --log convention
 * included); this program writes nothing itself unless even nvbind cannot be executed.
 * The original argument vector (argv[1..]) is passed on unchanged; argv[0] is the
 * executed file's path, as the Python shim does.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_CONFIG (16 * 1024 * 1024) /* oci.MAX_INPUT */
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static const char *const TRIGGERS[] = { /* oci.TRIGGERS */
    "NVIDIA_VISIBLE_DEVICES", "CUDA_VERSION", "nvbind.io/", "nvidia-container-devices",
};
/* runc's global options that take a value (shim.GLOBAL_WITH_VALUE) */
static const char *const GLOBAL_WITH_VALUE[] = {"--root", "--log", "--log-format", "--criu",
                                                "--rootless"};

static char self_path[PATH_MAX], nvbind_path[PATH_MAX];

extern char **environ;

/* shim.split(): the index of the verb in argv[1..argc), or -1 */
static int verb_index(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0)
            return i + 1 < argc ? i + 1 : -1;
        if (a[0] == '-') {
            for (size_t k = 0; k < sizeof GLOBAL_WITH_VALUE / sizeof *GLOBAL_WITH_VALUE; k++)
                if (strcmp(a, GLOBAL_WITH_VALUE[k]) == 0) {
                    i++;
                    break;
                }
            continue;
        }
        return i;
    }
    return -1;
}

/* shim.bundle_of(): --bundle/-b VALUE, --bundle=VALUE, else "." */
static const char *bundle_of(int from, int argc, char **argv) {
    for (int i = from; i < argc; i++) {
        if (strcmp(argv[i], "--bundle") == 0 || strcmp(argv[i], "-b") == 0)
            return i + 1 < argc ? argv[i + 1] : ".";
        if (strncmp(argv[i], "--bundle=", 9) == 0)
            return argv[i] + 9;
    }
    return ".";
}

/* 1 when the bundle's config.json could ask for something (or cannot be read), else 0 */
static int may_request(const char *bundle) {
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/config.json", bundle) >= (int)sizeof path)
        return 1;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return 1;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > MAX_CONFIG) {
        close(fd);
        return 1;
    }
    size_t cap = (size_t)st.st_size + 1, len = 0; /* +1: sees a file that grew */
    char *buf = malloc(cap + 1);
    if (!buf) {
        close(fd);
        return 1;
    }
    for (;;) {
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || (n > 0 && len + (size_t)n >= cap)) { /* error, or larger than fstat said */
            free(buf);
            close(fd);
            return 1;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = 0;
    int hit = memchr(buf, 0, len) != NULL; /* a NUL: let Python judge the input */
    for (size_t i = 0; !hit && i < len; i++)
        if (buf[i] == '\\' || (unsigned char)buf[i] >= 0x80)
            hit = 1;
    for (size_t k = 0; !hit && k < sizeof TRIGGERS / sizeof *TRIGGERS; k++)
        if (memmem(buf, len, TRIGGERS[k], strlen(TRIGGERS[k])))
            hit = 1;
    free(buf);
    return hit;
}

/* shim.real_runtime()'s check: an absolute path must be executable (os.access), others
 * pass shutil.which's check (exists, executable, not a directory); and it must be neither
 * this program nor nvbind. Compared by device and inode (stat follows links as realpath
 * does; a hard link to either is refused too): fewer system calls than realpath. */
static int same_file(const struct stat *a, const struct stat *b) {
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

static int usable(const char *path) {
    static struct stat self, nvbind;
    static int have_self = -1, have_nvbind = -1;
    struct stat st;
    if (access(path, X_OK) != 0 || stat(path, &st) != 0 || (path[0] != '/' && S_ISDIR(st.st_mode)))
        return 0;
    if (have_self < 0)
        have_self = stat("/proc/self/exe", &self) == 0;
    if (!have_self || same_file(&st, &self))
        return 0;
    if (have_nvbind < 0)
        have_nvbind = stat(nvbind_path, &nvbind) == 0;
    return !(have_nvbind && same_file(&st, &nvbind));
}

/* shim.real_runtime(): into out; 0 when found */
static int real_runtime(char *out, size_t size) {
    const char *want = getenv("NVBIND_RUNTIME");
    const char *names[2];
    int n = 0;
    if (want && *want)
        names[n++] = want;
    names[n++] = "runc";
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = DEFAULT_PATH;
    for (int k = 0; k < n; k++) {
        const char *name = names[k];
        if (strchr(name, '/')) { /* absolute, or relative with a directory part: as given */
            if (strlen(name) < size && usable(name)) {
                strcpy(out, name);
                return 0;
            }
            continue;
        }
        for (const char *p = path;;) { /* a name: the first match on PATH */
            const char *end = strchrnul(p, ':');
            int dlen = (int)(end - p);
            /* an empty PATH entry is the current directory, as in shutil.which */
            int w = dlen ? snprintf(out, size, "%.*s/%s", dlen, p, name)
                         : snprintf(out, size, "%s", name);
            if (w > 0 && (size_t)w < size && usable(out))
                return 0;
            if (!*end)
                break;
            p = end + 1;
        }
    }
    return -1;
}

static void exec_nvbind(char **argv) {
    /* argv[0] "nvbind-runtime": nvbind (cli.main) takes every argument as the runtime's,
     * exactly as when docker or containerd call it under that name */
    argv[0] = "nvbind-runtime";
    execve(nvbind_path, argv, environ);
    fprintf(stderr, "nvbind-runtime: error: cannot execute %s: %s\n", nvbind_path, strerror(errno));
    exit(1);
}

int main(int argc, char **argv) {
    char real[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
    if (n <= 0 || (size_t)n >= sizeof self_path - 1) {
        fprintf(stderr, "nvbind-runtime: error: cannot read /proc/self/exe\n");
        return 1;
    }
    self_path[n] = 0;
    char *slash = strrchr(self_path, '/');
    if (snprintf(nvbind_path, sizeof nvbind_path, "%.*s/nvbind", (int)(slash - self_path),
                 self_path) >= (int)sizeof nvbind_path) {
        fprintf(stderr, "nvbind-runtime: error: path too long\n");
        return 1;
    }

    int v = verb_index(argc, argv);
    if (v > 0 && (strcmp(argv[v], "create") == 0 || strcmp(argv[v], "run") == 0)
        && may_request(bundle_of(v + 1, argc, argv)))
        exec_nvbind(argv);
    if (real_runtime(real, sizeof real) != 0)
        exec_nvbind(argv); /* nvbind says what was missing, its way */
    argv[0] = real;
    execve(real, argv, environ);
    exec_nvbind(argv); /* could not exec it: nvbind reports why */
    return 1;
}
