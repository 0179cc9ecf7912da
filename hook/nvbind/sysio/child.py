"""Forked children that cannot outlive their deadline (issue 13, 3).

Every process nvbind forks (into a container's mount namespace, or to run the host's
ldconfig) calls `setup` first: PR_SET_PDEATHSIG(SIGKILL), so that it dies with the hook
when the engine kills the hook at its timeout; its stdin and stdout on /dev/null and its
stderr on nvbind's own pipe or /dev/null, so that it holds none of the pipes the runtime
waits on (runc waits for EOF on the hook's stdout/stderr, held by any child). The parent
reads the child's report with `wait`, which kills it at the deadline.

Deadlines, shortest inside: ldconfig (LDCONFIG) < the live child (LIVE) < the hook entry
timeout nvbind writes (core.edits.HOOK_TIMEOUT, 30 s; CRI-O's hooks.d entry 30 s).
"""

import posix      # not os: nvbind.early says why

PR_SET_PDEATHSIG = 1
# signal(7): 9 on every Linux architecture. A constant rather than the `signal` module,
# whose IntEnum wrappers cost a createContainer hook ~1 ms of imports.
SIGKILL = 9
LDCONFIG = 15.0
LIVE = 25.0


def setup(parent: int, stderr: int | None = None) -> None:
    """In the child, right after fork. `parent`: posix.getpid() of the parent before the fork
    (if it is gone already, the death signal would never come: exit now)."""
    from nvbind.sysio import syscalls
    syscalls.prctl(PR_SET_PDEATHSIG, SIGKILL)
    if posix.getppid() != parent:
        posix._exit(1)
    stdio(stderr)


def imports_closed() -> None:
    """In a child about to join a container's mount namespace, where the paths the import
    system searches could name the image's files (a runtime that runs the hook after
    pivot_root; runc and crun run createRuntime before it): from here only built-in and
    frozen modules load (nvbind's own are frozen in the frozen build, read through a file
    opened before the fork). The caller imports everything the child runs before forking;
    an import it missed fails instead of searching the image."""
    import sys
    sys.meta_path[:] = [f for f in sys.meta_path
                        if getattr(f, "__name__", None) in ("BuiltinImporter", "FrozenImporter")]


def stdio(stderr: int | None) -> None:
    """stdin and stdout on /dev/null (they are the engine's pipes: nothing of theirs may
    hold them), stderr on `stderr` (2: left as it is; None: /dev/null)."""
    null = posix.open("/dev/null", posix.O_RDWR | posix.O_CLOEXEC)
    posix.dup2(null, 0)
    posix.dup2(null, 1)
    posix.dup2(stderr if stderr is not None else null, 2)
    posix.close(null)


def wait(pid: int, r: int, timeout: float) -> tuple[int | None, bytes]:
    """Read the child's pipe `r` to EOF and reap it, within `timeout` seconds. Returns
    (wait status, or None when it was killed at the deadline; the last 64 KiB read).
    Both waits are plain blocking calls under sysio.deadline (the child may still be
    exiting after EOF: its files close before it can be reaped). At the deadline the child
    is killed through its pidfd, which names that process and no other, even one that
    was reaped just as the time ran out."""
    from nvbind.sysio import deadline
    try:
        pfd = posix.pidfd_open(pid)
    except OSError:             # a kernel before 5.3
        pfd = None
    out = b""
    status = None
    try:
        with deadline.within(timeout):
            while True:
                chunk = posix.read(r, 65536)
                if not chunk:
                    break
                out = (out + chunk)[-65536:]
            status = posix.waitpid(pid, 0)[1]
    except deadline.Expired:
        if status is None:
            return _kill(pid, pfd), out
    finally:
        posix.close(r)
        if pfd is not None:
            posix.close(pfd)
    return status, out


def _kill(pid: int, pfd: int | None) -> None:
    try:
        if pfd is not None:
            import _signal
            _signal.pidfd_send_signal(pfd, SIGKILL)
        else:
            posix.kill(pid, SIGKILL)
        posix.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass            # reaped already
