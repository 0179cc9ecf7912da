/* nvbind-createcontainer: the createContainer hook (soname links and the ld cache inside
 * the container) without starting Python, for the common case; nvbind does everything else.
 *
 * It takes exactly `nvbind hook createContainer`'s command line (the hook entry that
 * precreate, the shim and CDI write; core/edits.py points it here when this program sits
 * beside nvbind) and does what doors/create_container.py does:
 *   - links: each --link TARGET::/LINK made inside the rootfs, the parent directory opened
 *     with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) and created when missing,
 *     an image's own file at LINK kept (sysio/root.symlink);
 *   - CUDA forward compatibility (apply/compat.py): when --driver-version is given and the
 *     image's /usr/local/cuda/compat holds a newer libcuda.so.X.Y, its ld.so.conf.d entry
 *     is written and the directory goes first;
 *   - the ld cache (apply/ldcache.py): the host's ldconfig, copied into a sealed memfd,
 *     run with `-r ROOTFS FOLDERS...`, empty environment, in a private mount namespace with
 *     the rootfs's /proc and /sys covered by empty read-only tmpfs, 60 s at most;
 *   - the log line (log.record, the same keys) when the log level wants it.
 * Anything off that path goes to nvbind itself, which decides and reports the way it always
 * does (the state it read is handed over on stdin): an option it does not know, a
 * configuration file (--config, NVBIND_CONFIG, /etc/nvbind/config.toml) that is missing when
 * named or whose bytes mention ldconfig, log_level, log_file or root (it reads no TOML), no
 * --log/NVBIND_LOG, a state or config.json that is not plain (escapes in the strings it
 * needs, duplicate keys, odd paths, a malformed document), no openat2, and any failure
 * while working (nvbind redoes the work, which is idempotent, and reports the error).
 * It parses the OCI state and config.json with a strict JSON reader that keeps only
 * id, bundle, pid, annotations' type and root.path. Nothing from the image is executed.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_DOC (16 * 1024 * 1024) /* oci.MAX_INPUT */
#define STDIN_TIMEOUT_MS 10000     /* oci.STDIN_TIMEOUT */
#define LDCONFIG_TIMEOUT_MS 60000  /* ldcache._run_sealed */
#define MAX_ARGS 4096
#define COMPAT_DIR "/usr/local/cuda/compat"
#define COMPAT_CONF "00-nvbind-cuda-compat.conf"
#define DEFAULT_CONFIG "/etc/nvbind/config.toml"

static char **g_argv;
static char *g_state;
static size_t g_state_len;
static int g_state_read;

/* ---------------------------------------------------------------- fall back to nvbind */
static void fallback(void) {
    char self[PATH_MAX], nvbind[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = 0;
        char *slash = strrchr(self, '/');
        *slash = 0;
        if (snprintf(nvbind, sizeof nvbind, "%s/nvbind", self) < (int)sizeof nvbind) {
            if (g_state_read) { /* hand over what was read from stdin */
                int fd = memfd_create("nvbind-state", 0);
                if (fd < 0 || write(fd, g_state, g_state_len) != (ssize_t)g_state_len
                    || lseek(fd, 0, SEEK_SET) != 0 || dup2(fd, 0) < 0)
                    goto fail;
                close(fd);
            }
            execv(nvbind, g_argv);
        }
    }
fail:
    fprintf(stderr, "nvbind: error: createContainer: cannot run nvbind: %s\n", strerror(errno));
    exit(1);
}

#define NEED(cond) do { if (!(cond)) fallback(); } while (0)

/* ---------------------------------------------------------------- bounded reads */
static char *read_fd(int fd, size_t *len, int timeout_ms) {
    struct stat st;
    NEED(fstat(fd, &st) == 0);
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap + 1);
    NEED(buf);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        if (!S_ISREG(st.st_mode)) {
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            long left = timeout_ms - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
            struct pollfd p = {fd, POLLIN, 0};
            NEED(left > 0 && poll(&p, 1, (int)left) == 1);
        }
        if (n == cap) {
            NEED(cap <= MAX_DOC);
            cap *= 2;
            buf = realloc(buf, cap + 1);
            NEED(buf);
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        NEED(r >= 0);
        if (r == 0)
            break;
        n += (size_t)r;
        NEED(n <= MAX_DOC);
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

/* ---------------------------------------------------------------- strict JSON reader */
/* Validates a whole document (RFC 8259); keeps, for wanted keys, the raw span of a string
 * without escapes (a string with escapes marks the key as "escaped": nvbind decides). */
struct want {
    const char *k1, *k2; /* top-level key, and a key inside it (or NULL) */
    int type;            /* first char of the value: '"', '{', '[', 't', 'f', 'n', or '0' */
    const char *s;       /* string value (raw), or number span */
    size_t len;
    int seen, escaped;
};

struct jp {
    const char *p, *end;
    struct want *w;
    int nw;
    int depth;
    int bad;
};

static void ws(struct jp *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

/* a string at j->p; returns its raw span (without quotes) and whether it had escapes */
static int jstring(struct jp *j, const char **s, size_t *len, int *esc) {
    if (j->p >= j->end || *j->p != '"')
        return -1;
    const char *q = ++j->p;
    *esc = 0;
    while (j->p < j->end && *j->p != '"') {
        unsigned char c = (unsigned char)*j->p;
        if (c < 0x20)
            return -1;
        if (c == '\\') {
            *esc = 1;
            j->p++;
            if (j->p >= j->end)
                return -1;
            if (*j->p == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (j->p + i >= j->end || !strchr("0123456789abcdefABCDEF", j->p[i]) || !j->p[i])
                        return -1;
                j->p += 4;
            } else if (!strchr("\"\\/bfnrt", *j->p) || !*j->p) {
                return -1;
            }
        } else if (c >= 0x80) {
            *esc = 1; /* non-ASCII: valid UTF-8 is nvbind's to judge */
        }
        j->p++;
    }
    if (j->p >= j->end)
        return -1;
    *s = q;
    *len = (size_t)(j->p - q);
    j->p++;
    return 0;
}

static int jvalue(struct jp *j, const char *k1, const char *k2);

static int jnumber(struct jp *j) {
    const char *p = j->p;
    if (p < j->end && *p == '-')
        p++;
    if (p >= j->end)
        return -1;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (p < j->end && *p >= '0' && *p <= '9')
            p++;
    else
        return -1;
    if (p < j->end && *p == '.') {
        p++;
        if (p >= j->end || *p < '0' || *p > '9')
            return -1;
        while (p < j->end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < j->end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < j->end && (*p == '+' || *p == '-'))
            p++;
        if (p >= j->end || *p < '0' || *p > '9')
            return -1;
        while (p < j->end && *p >= '0' && *p <= '9')
            p++;
    }
    j->p = p;
    return 0;
}

static struct want *wanted(struct jp *j, const char *k1, const char *k2) {
    for (int i = 0; i < j->nw; i++) {
        struct want *w = &j->w[i];
        if (k1 && strcmp(w->k1, k1) == 0 && ((!w->k2 && !k2) || (w->k2 && k2 && strcmp(w->k2, k2) == 0)))
            return w;
    }
    return NULL;
}

/* k1/k2: the key path of this value (NULL above the level) */
static int jvalue(struct jp *j, const char *k1, const char *k2) {
    ws(j);
    if (j->p >= j->end)
        return -1;
    struct want *w = wanted(j, k1, k2);
    if (w) {
        if (w->seen)
            return -1; /* a duplicate key: nvbind decides */
        w->seen = 1;
        w->type = (*j->p == '-' || (*j->p >= '0' && *j->p <= '9')) ? '0' : *j->p;
    }
    char c = *j->p;
    if (c == '"') {
        const char *s;
        size_t len;
        int esc;
        if (jstring(j, &s, &len, &esc))
            return -1;
        if (w)
            w->s = s, w->len = len, w->escaped = esc;
        return 0;
    }
    if (c == '{' || c == '[') {
        if (++j->depth > 512)
            return -1;
        j->p++;
        ws(j);
        char close = c == '{' ? '}' : ']';
        if (j->p < j->end && *j->p == close) {
            j->p++;
            j->depth--;
            return 0;
        }
        /* keys are tracked two levels down from the top object only */
        int level = !k1 ? 1 : (!k2 ? 2 : 3);
        char key[64];
        for (;;) {
            const char *nk1 = NULL, *nk2 = NULL;
            if (c == '{') {
                const char *s;
                size_t len;
                int esc;
                ws(j);
                if (jstring(j, &s, &len, &esc))
                    return -1;
                ws(j);
                if (j->p >= j->end || *j->p != ':')
                    return -1;
                j->p++;
                /* a key with escapes could spell a wanted one: nvbind decides */
                if (esc && level <= 2)
                    return -1;
                if (level <= 2 && j->depth - 1 == level - 1 && len < sizeof key) {
                    if (level == 1) {
                        memcpy(key, s, len), key[len] = 0;
                        nk1 = key;
                    } else {
                        memcpy(key, s, len), key[len] = 0;
                        nk1 = k1, nk2 = key;
                    }
                }
                if (level <= 2 && len >= sizeof key) /* a long key is no wanted key */
                    nk1 = NULL, nk2 = NULL;
            }
            if (c == '[' || (level > 2) || !nk1) {
                /* inside arrays and below the tracked levels nothing is wanted */
                if (jvalue(j, NULL, NULL))
                    return -1;
            } else if (jvalue(j, nk1, nk2)) {
                return -1;
            }
            ws(j);
            if (j->p < j->end && *j->p == ',') {
                j->p++;
                continue;
            }
            if (j->p < j->end && *j->p == close) {
                j->p++;
                j->depth--;
                return 0;
            }
            return -1;
        }
    }
    if (c == 't' && j->end - j->p >= 4 && !memcmp(j->p, "true", 4))
        return j->p += 4, 0;
    if (c == 'f' && j->end - j->p >= 5 && !memcmp(j->p, "false", 5))
        return j->p += 5, 0;
    if (c == 'n' && j->end - j->p >= 4 && !memcmp(j->p, "null", 4))
        return j->p += 4, 0;
    const char *start = j->p;
    if (jnumber(j))
        return -1;
    if (w)
        w->s = start, w->len = (size_t)(j->p - start);
    return 0;
}

/* the document must be one object */
static void parse(const char *buf, size_t len, struct want *w, int nw) {
    struct jp j = {buf, buf + len, w, nw, 0, 0};
    ws(&j);
    NEED(j.p < j.end && *j.p == '{');
    NEED(jvalue(&j, NULL, NULL) == 0);
    ws(&j);
    NEED(j.p == j.end);
}

static char *dup_span(const struct want *w) {
    char *s = strndup(w->s, w->len);
    NEED(s && strlen(s) == w->len);
    return s;
}

/* ---------------------------------------------------------------- paths in the rootfs */
static int openat2_in(int rootfd, const char *path, int flags, mode_t mode) {
    struct open_how how = {.flags = (unsigned long long)flags, .mode = mode,
                           .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
    return (int)syscall(SYS_openat2, rootfd, path, &how, sizeof how);
}

#define DIR_FLAGS (O_RDONLY | O_DIRECTORY | O_CLOEXEC)

/* sysio/root.open_dir(rootfd, path, create): -1 with errno on failure */
static int open_dir(int rootfd, const char *path, int create) {
    char comps[PATH_MAX], sub[PATH_MAX];
    if (strlen(path) >= sizeof comps)
        return errno = ENAMETOOLONG, -1;
    /* the components without "" and "." */
    size_t n = 0;
    for (const char *p = path; *p;) {
        while (*p == '/')
            p++;
        const char *e = strchrnul(p, '/');
        size_t l = (size_t)(e - p);
        if (l && !(l == 1 && *p == '.')) {
            if (n)
                comps[n++] = '/';
            memcpy(comps + n, p, l);
            n += l;
        }
        p = e;
    }
    comps[n] = 0;
    int fd = openat2_in(rootfd, n ? comps : ".", DIR_FLAGS, 0);
    if (fd >= 0 || errno != ENOENT || !create)
        return fd;
    fd = dup(rootfd);
    if (fd < 0)
        return -1;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && comps[i] != '/')
            continue;
        memcpy(sub, comps, i), sub[i] = 0;
        const char *name = strrchr(sub, '/') ? strrchr(sub, '/') + 1 : sub;
        int nfd = openat2_in(rootfd, sub, DIR_FLAGS, 0);
        if (nfd < 0 && errno == ENOENT) {
            if (mkdirat(fd, name, 0755) < 0 && errno != EEXIST) {
                close(fd);
                return -1;
            }
            nfd = openat2_in(rootfd, sub, DIR_FLAGS, 0);
        }
        close(fd);
        if (nfd < 0)
            return -1;
        fd = nfd;
    }
    return fd;
}

/* sysio/root.symlink: 0, or -1 (nvbind redoes it and says why) */
static int make_link(int rootfd, const char *link, const char *target) {
    char parent[PATH_MAX];
    size_t l = strlen(link);
    while (l > 1 && link[l - 1] == '/')
        l--;
    if (l >= sizeof parent)
        return -1;
    memcpy(parent, link, l), parent[l] = 0;
    char *slash = strrchr(parent, '/');
    char *name = slash + 1;
    if (!*name || !strcmp(name, ".") || !strcmp(name, ".."))
        return -1;
    *slash = 0;
    int dfd = open_dir(rootfd, *parent ? parent : "/", 1);
    if (dfd < 0)
        return -1;
    char cur[PATH_MAX];
    ssize_t n = readlinkat(dfd, name, cur, sizeof cur - 1);
    int rc = 0;
    if (n >= 0) {
        cur[n] = 0;
        if (strcmp(cur, target) != 0)
            rc = (unlinkat(dfd, name, 0) == 0 && symlinkat(target, dfd, name) == 0) ? 0 : -1;
    } else if (errno == ENOENT) {
        rc = symlinkat(target, dfd, name) == 0 ? 0 : -1;
    } else if (errno != EINVAL) { /* EINVAL: the image has a file there; kept */
        rc = -1;
    }
    close(dfd);
    return rc;
}

/* apply/compat.newer_compat: 1 when the compat directory holds a newer libcuda */
static int parse_version(const char *s, long *v, int max) {
    int n = 0;
    for (const char *p = s;;) {
        const char *e = strchrnul(p, '.');
        if (e == p || e - p > 9 || n == max)
            return -1;
        long x = 0;
        for (const char *q = p; q < e; q++) {
            if (*q < '0' || *q > '9')
                return -1;
            x = x * 10 + (*q - '0');
        }
        v[n++] = x;
        if (!*e)
            return n;
        p = e + 1;
    }
}

static int newer_compat(int rootfd, const char *driver) {
    long host[16], v[16];
    int hn = parse_version(driver, host, 16);
    NEED(hn > 0); /* Python's int() accepts forms this does not: nvbind decides */
    int dfd = open_dir(rootfd, COMPAT_DIR, 0);
    if (dfd < 0)
        return 0;
    DIR *d = fdopendir(dfd);
    NEED(d);
    int newer = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "libcuda.so.", 11) != 0)
            continue;
        int n = parse_version(e->d_name + 11, v, 16);
        NEED(n > 0); /* a name Python might read otherwise: nvbind decides */
        if (n < 2)
            continue;
        int cmp = 0;
        for (int i = 0; i < n && i < hn && !cmp; i++)
            cmp = (v[i] > host[i]) - (v[i] < host[i]);
        if (!cmp)
            cmp = (n > hn) - (n < hn);
        if (cmp > 0)
            newer = 1;
    }
    closedir(d);
    return newer;
}

static int write_compat_conf(int rootfd) {
    int dfd = open_dir(rootfd, "/etc/ld.so.conf.d", 1);
    if (dfd < 0)
        return -1;
    int fd = openat(dfd, COMPAT_CONF, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    close(dfd);
    if (fd < 0)
        return -1;
    static const char text[] = "# written by nvbind: CUDA forward compatibility\n" COMPAT_DIR "\n";
    int rc = write(fd, text, sizeof text - 1) == (ssize_t)(sizeof text - 1) ? 0 : -1;
    return close(fd) == 0 ? rc : -1;
}

/* ---------------------------------------------------------------- ldconfig */
static int sealed_ldconfig(void) {
    static const char *const cands[] = {"/sbin/ldconfig", "/usr/sbin/ldconfig", "/sbin/ldconfig.real"};
    for (size_t i = 0; i < sizeof cands / sizeof *cands; i++) {
        struct stat st;
        if (stat(cands[i], &st) != 0 || !S_ISREG(st.st_mode) || access(cands[i], X_OK) != 0)
            continue;
        int src = open(cands[i], O_RDONLY | O_CLOEXEC);
        if (src < 0)
            return -1;
        int fd = memfd_create("nvbind-ldconfig", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        char buf[1 << 16];
        ssize_t n;
        while (fd >= 0 && (n = read(src, buf, sizeof buf)) > 0)
            if (write(fd, buf, (size_t)n) != n)
                n = -1, errno = EIO;
        close(src);
        if (fd < 0 || n < 0 || fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0)
            return -1;
        return fd;
    }
    return -1;
}

static void cover(const char *rootfs, const char *sub) {
    char p[PATH_MAX];
    struct stat st;
    if (snprintf(p, sizeof p, "%s/%s", rootfs, sub) < (int)sizeof p && lstat(p, &st) == 0
        && S_ISDIR(st.st_mode)
        && mount("tmpfs", p, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, "size=4k") < 0) {
        dprintf(2, "cannot run ldconfig: mount tmpfs on %s: %s", p, strerror(errno));
        _exit(127);
    }
}

static int run_ldconfig(const char *rootfs, char **folders, int nf) {
    int exe = sealed_ldconfig();
    if (exe < 0)
        return -1;
    char **args = calloc((size_t)nf + 4, sizeof *args);
    NEED(args);
    args[0] = "ldconfig", args[1] = "-r", args[2] = (char *)rootfs;
    for (int i = 0; i < nf; i++)
        args[3 + i] = folders[i];
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        char *envp[] = {NULL};
        int null = open("/dev/null", O_RDWR);
        if (dup2(pfd[1], 2) < 0 || null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || chdir("/") < 0
            || unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
            dprintf(2, "cannot run ldconfig: %s", strerror(errno));
            _exit(127);
        }
        cover(rootfs, "proc");
        cover(rootfs, "sys");
        fexecve(exe, args, envp);
        dprintf(2, "cannot run ldconfig: %s", strerror(errno));
        _exit(127);
    }
    close(pfd[1]);
    close(exe);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char buf[4096];
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        long left = LDCONFIG_TIMEOUT_MS - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
        struct pollfd p = {pfd[0], POLLIN, 0};
        int r = left > 0 ? poll(&p, 1, (int)left) : 0;
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            close(pfd[0]);
            return -1;
        }
        ssize_t n = read(pfd[0], buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
    }
    close(pfd[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* ---------------------------------------------------------------- the log line */
static int plain(const char *s) { /* printable ASCII without '"' or '\\': written as is */
    for (; *s; s++)
        if (*s < 0x20 || *s > 0x7e || *s == '"' || *s == '\\')
            return 0;
    return 1;
}

static void log_line(const char *log, const char *root, const char *id, int compat, double ms) {
    char when[32], line[PATH_MAX * 3];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    char dur[32];
    snprintf(dur, sizeof dur, "%.2f", ms); /* round(x, 2) as Python writes it: 12.3, 12.0 */
    size_t dl = strlen(dur);
    while (dl > 0 && dur[dl - 1] == '0' && dur[dl - 2] != '.')
        dur[--dl] = 0;
    int n = snprintf(line, sizeof line,
                     "{%s\"duration_ms\":%s,\"id\":\"%s\",\"outcome\":\"ok\",\"root\":\"%s\","
                     "\"stage\":\"createContainer\",\"time\":\"%s\"}\n",
                     compat ? "\"cuda_compat\":\"" COMPAT_DIR "\"," : "", dur, id, root, when);
    if (n <= 0 || (size_t)n >= sizeof line)
        return;
    int fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0 || write(fd, line, (size_t)n) != n)
        fprintf(stderr, "nvbind: warning: cannot write log %s: %s\n", log, strerror(errno));
    if (fd >= 0)
        close(fd);
}

/* ---------------------------------------------------------------- main */
static int has_bytes(const char *path, const char *const *words) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return errno == ENOENT ? 0 : 1;
    size_t len;
    char *buf = read_fd(fd, &len, STDIN_TIMEOUT_MS);
    close(fd);
    for (; *words; words++)
        if (memmem(buf, len, *words, strlen(*words))) {
            free(buf);
            return 1;
        }
    free(buf);
    return 0;
}

/* a path without "", "." or ".." components (a trailing '/' aside) */
static int clean_path(const char *p) {
    for (const char *c = p; *c;) {
        const char *e = strchrnul(c, '/');
        size_t l = (size_t)(e - c);
        if ((l == 0 && c != p && *e) || (l == 1 && *c == '.') || (l == 2 && c[0] == '.' && c[1] == '.'))
            return 0;
        c = *e ? e + 1 : e;
    }
    return 1;
}

int main(int argc, char **argv) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    g_argv = argv;
    NEED(argc < MAX_ARGS);
    const char *root = getenv("NVBIND_ROOT"), *log = getenv("NVBIND_LOG"), *driver = NULL;
    const char *cfg = getenv("NVBIND_CONFIG");
    if (cfg && !*cfg)
        cfg = NULL;
    if (root && !*root)
        root = NULL;
    char *folders[MAX_ARGS], *targets[MAX_ARGS], *links[MAX_ARGS];
    int nf = 0, nl = 0, i = 1;
    /* global options (settings.Settings), then "hook createContainer" */
    for (; i < argc; i++) {
        if (!strcmp(argv[i], "--root") && i + 1 < argc)
            root = argv[++i];
        else if (!strncmp(argv[i], "--root=", 7))
            root = argv[i] + 7;
        else if (!strcmp(argv[i], "--log") && i + 1 < argc)
            log = argv[++i];
        else if (!strcmp(argv[i], "--config") && i + 1 < argc)
            cfg = argv[++i];
        else
            break; /* anything else: nvbind */
    }
    NEED(root == NULL || *root);
    NEED(i + 1 < argc && !strcmp(argv[i], "hook") && !strcmp(argv[i + 1], "createContainer"));
    for (i += 2; i < argc; i++) {
        if (!strcmp(argv[i], "--folder") && i + 1 < argc) {
            folders[nf++] = argv[++i];
        } else if (!strcmp(argv[i], "--driver-version") && i + 1 < argc) {
            driver = argv[++i];
        } else if (!strcmp(argv[i], "--link") && i + 1 < argc) {
            char *v = argv[++i], *sep = strstr(v, "::");
            NEED(sep && sep != v && sep[2] == '/');
            targets[nl] = strndup(v, (size_t)(sep - v));
            links[nl++] = sep + 2;
            NEED(targets[nl - 1] && !strchr(targets[nl - 1], '/'));
        } else {
            fallback();
        }
    }
    for (int k = 0; k < nf; k++)
        NEED(folders[k][0] == '/' && clean_path(folders[k]));
    /* settings nvbind would read from its configuration file */
    /* settings.load: --config, else NVBIND_CONFIG, else the default path; an explicit file
     * that is missing is nvbind's error to report */
    static const char *const keys[] = {"ldconfig", "log_level", "root", "log_file", NULL};
    if (cfg && access(cfg, F_OK) != 0)
        fallback();
    NEED(!has_bytes(cfg ? cfg : DEFAULT_CONFIG, keys));
    const char *level = getenv("NVBIND_LOG_LEVEL");
    int want_log = !(level && *level && (!strcmp(level, "error") || !strcmp(level, "warn")));
    NEED(log != NULL); /* the default log file comes from the configuration: nvbind */
    if (!*log || !strcmp(log, "off") || !strcmp(log, "-"))
        want_log = 0;
    if (!root)
        root = "/";
    NEED(plain(root));

    /* the OCI state on stdin (oci.parse_state) */
    g_state = read_fd(0, &g_state_len, STDIN_TIMEOUT_MS);
    g_state_read = 1;
    struct want sw[4] = {{.k1 = "id"}, {.k1 = "bundle"}, {.k1 = "pid"}, {.k1 = "annotations"}};
    parse(g_state, g_state_len, sw, 4);
    NEED(sw[0].seen && sw[0].type == '"' && !sw[0].escaped && sw[0].len);
    NEED(sw[1].seen && sw[1].type == '"' && !sw[1].escaped && sw[1].len && sw[1].s[0] == '/');
    NEED(!sw[2].seen || sw[2].type == 'n' || (sw[2].type == '0' && sw[2].s[0] != '-'
                                             && !memchr(sw[2].s, '.', sw[2].len)
                                             && !memchr(sw[2].s, 'e', sw[2].len)
                                             && !memchr(sw[2].s, 'E', sw[2].len)));
    NEED(!sw[3].seen || sw[3].type == '{' || sw[3].type == 'n');
    char *id = dup_span(&sw[0]), *bundle = dup_span(&sw[1]);
    NEED(plain(id) && clean_path(bundle));

    /* root.path of the bundle's config.json (oci.load_bundle, oci.rootfs_path) */
    char path[PATH_MAX], rootfs[PATH_MAX];
    NEED(snprintf(path, sizeof path, "%s/config.json", bundle) < (int)sizeof path);
    int cfd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    NEED(cfd >= 0);
    size_t clen;
    char *config = read_fd(cfd, &clen, STDIN_TIMEOUT_MS);
    close(cfd);
    struct want cw[2] = {{.k1 = "root"}, {.k1 = "root", .k2 = "path"}};
    parse(config, clen, cw, 2);
    NEED(cw[0].type == '{' && cw[1].seen && cw[1].type == '"' && !cw[1].escaped && cw[1].len);
    char *rpath = dup_span(&cw[1]);
    NEED(clean_path(rpath));
    if (rpath[0] == '/')
        NEED(snprintf(rootfs, sizeof rootfs, "%s", rpath) < (int)sizeof rootfs);
    else
        NEED(snprintf(rootfs, sizeof rootfs, "%s/%s", bundle, rpath) < (int)sizeof rootfs);
    size_t rl = strlen(rootfs);
    while (rl > 1 && rootfs[rl - 1] == '/')
        rootfs[--rl] = 0;
    int rootfd = open(rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    NEED(rootfd >= 0);
    int probe = openat2_in(rootfd, ".", DIR_FLAGS, 0);
    NEED(probe >= 0); /* no openat2 here: nvbind's walk */
    close(probe);

    /* the work: links, compat, ld cache */
    for (int k = 0; k < nl; k++)
        NEED(make_link(rootfd, links[k], targets[k]) == 0);
    int compat = 0;
    char *order[MAX_ARGS];
    int no = 0;
    if (nf && driver && newer_compat(rootfd, driver)) {
        NEED(write_compat_conf(rootfd) == 0);
        compat = 1;
        order[no++] = COMPAT_DIR;
    }
    for (int k = 0; k < nf; k++)
        if (!compat || strcmp(folders[k], COMPAT_DIR) != 0)
            order[no++] = folders[k];
    close(rootfd);
    if (nf)
        NEED(run_ldconfig(rootfs, order, no) == 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (want_log)
        log_line(log, root, id, compat, (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);
    return 0;
}
