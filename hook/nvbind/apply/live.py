"""ContainerEdits -> a container that already exists (createRuntime / prestart stages).

The runtime has read config.json already, so nvbind changes the live container:
* device cgroup rules from the host side (cgroups.py);
* everything inside from a forked child that joins the container's mount namespace
  (setns on /proc/PID/ns/mnt) — the hook's own process never enters it;
* mount sources are opened and cloned on the host side (open_tree), the clone made
  read-only/nosuid/nodev[/noexec] and private before it is attached, then attached
  onto a target that was created and opened inside the rootfs only (openat2
  RESOLVE_IN_ROOT, O_NOFOLLOW), through its fd (move_mount): no path string is
  resolved twice, and no link in the image can lead a mount or a file out of it;
* device nodes are made with mknodat in the container's /dev (a tmpfs there);
* the ld cache is rebuilt by the host's ldconfig (sealed copy made on the host side).
"""

import errno
import os
import stat

from nvbind.apply import cgroups
from nvbind.sysio import root as fsroot
from nvbind.sysio import syscalls as nsys
from nvbind.apply import ldcache
from nvbind.errors import NvbindError

ATTRS = {"ro": nsys.MOUNT_ATTR_RDONLY, "nosuid": nsys.MOUNT_ATTR_NOSUID,
         "nodev": nsys.MOUNT_ATTR_NODEV, "noexec": nsys.MOUNT_ATTR_NOEXEC}
# Test hook: NVBIND_TEST_KILL_AT=<step> makes the child SIGKILL itself at that step.
KILL_AT = "NVBIND_TEST_KILL_AT"


def apply(state: dict, rootfs: str, ed, driver_version: str | None = None,
          ldconfig: str | None = None) -> list[str]:
    pid = state.get("pid")
    if not pid:
        raise NvbindError(f"container {state['id']}: the OCI state has no pid, so the running "
                          "container cannot be reached (use precreate, the runtime shim or CDI)")
    done = [cgroups.allow(pid, ed.cgroup)]
    prepared = []
    ldfd = None
    try:
        for m in ed.mounts:
            src = os.open(m.source, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                tree = nsys.open_tree(src, "", nsys.OPEN_TREE_CLONE | nsys.OPEN_TREE_CLOEXEC
                                      | nsys.AT_EMPTY_PATH)
            finally:
                os.close(src)
            prepared.append((m, tree))
            attrs = 0
            for o in m.options:
                attrs |= ATTRS.get(o, 0)
            nsys.mount_setattr(tree, attrs, nsys.MS_PRIVATE)
        if ed.ldcache_folders:
            ldfd = ldcache.sealed_copy(ldcache.find_ldconfig(ldconfig))
        nsfd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        for _, fd in prepared:
            os.close(fd)
        raise NvbindError(f"preparing mounts for {state['id']}: {e}") from None
    try:
        done += _in_child(nsfd, rootfs, ed, prepared, ldfd, driver_version)
    finally:
        os.close(nsfd)
        for _, fd in prepared:
            os.close(fd)
        if ldfd is not None:
            os.close(ldfd)
    return done


def _in_child(nsfd, rootfs, ed, prepared, ldfd, driver_version) -> list[str]:
    """Fork a child that joins the container's mount namespace and does the work there;
    bounded (sysio.child): dies with the hook, holds none of the runtime's pipes, killed
    at child.LIVE seconds."""
    from nvbind.sysio import child as bounded
    # every module the child runs, loaded before it joins the container's namespace
    from nvbind.apply import compat  # noqa: F401
    from nvbind.sysio import deadline  # noqa: F401
    parent = os.getpid()
    r, w = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child, reported through the pipe
        code = 1
        try:
            bounded.imports_closed()
            bounded.setup(parent)
            os.close(r)
            nsys.setns(nsfd, nsys.CLONE_NEWNS)
            os.umask(0)
            notes = _inside(rootfs, ed, prepared, ldfd, driver_version)
            os.write(w, ("ok\n" + "\n".join(notes)).encode())
            code = 0
        except BaseException as e:  # noqa: BLE001 - everything goes back to the parent
            os.write(w, f"error\n{e}".encode()[:8000])
        finally:
            os._exit(code)
    os.close(w)
    status, data = bounded.wait(child, r, bounded.LIVE)
    if status is None:
        raise NvbindError(f"injection inside the container did not finish within "
                          f"{bounded.LIVE:g} s; killed")
    out = data.decode(errors="replace")
    kind, _, body = out.partition("\n")
    if os.WIFSIGNALED(status):
        raise NvbindError(f"injection inside the container was killed by signal {os.WTERMSIG(status)}")
    if kind != "ok" or os.WEXITSTATUS(status) != 0:
        raise NvbindError(f"injection inside the container failed: {' '.join(body.split()) or 'no message'}")
    return body.splitlines()


def _step(name):
    if os.environ.get(KILL_AT) == name:
        from nvbind.sysio.child import SIGKILL
        os.kill(os.getpid(), SIGKILL)


def _inside(rootfs, ed, prepared, ldfd, driver_version=None) -> list[str]:
    notes = []
    with fsroot.Root.open(rootfs) as root:     # the one open by path, in the container's ns
        rootfd = root.fd
        for d in ed.devices:
            notes.append(_node(rootfd, d))
        _step("nodes")
        for m, tree in prepared:
            notes.append(_mount(rootfd, m, tree))
            _step("mount")
        notes += ldcache.make_links(root, [(s.target, s.link) for s in ed.symlinks])
        if ed.ldcache_folders:
            from nvbind.apply import compat
            folders = compat.prepare(root, driver_version, ed.ldcache_folders)
            ldcache.update(root, folders, exe_fd=ldfd)
            notes.append("ld cache updated" + (" (CUDA forward compatibility)"
                                               if folders[0] == compat.COMPAT_DIR else ""))
    return notes


def _node(rootfd, d) -> str:
    parent, name = os.path.split(d.path)
    dfd = fsroot.open_dir(rootfd, parent, create=True)
    try:
        try:
            os.mknod(name, stat.S_IFCHR | d.mode, os.makedev(d.major, d.minor), dir_fd=dfd)
            return f"made {d.path} c {d.major}:{d.minor}"
        except FileExistsError:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(d.major, d.minor):
                return f"{d.path} already present"
            raise NvbindError(f"{d.path} exists in the container and is not the device "
                              f"{d.major}:{d.minor}") from None
    finally:
        os.close(dfd)


def _mount(rootfd, m, tree) -> str:
    parent, name = os.path.split(m.destination)
    dfd = fsroot.open_dir(rootfd, parent, create=True)
    try:
        is_dir = stat.S_ISDIR(os.fstat(tree).st_mode)
        try:
            if is_dir:
                os.mkdir(name, 0o755, dir_fd=dfd)
            else:
                os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, 0o644, dir_fd=dfd))
        except FileExistsError:
            pass
        try:
            tfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        except OSError as e:
            raise NvbindError(f"mount target {m.destination}: {e.strerror}") from None
        try:
            st = os.fstat(tfd)
            if not (stat.S_ISDIR(st.st_mode) if is_dir else stat.S_ISREG(st.st_mode)):
                raise NvbindError(f"mount target {m.destination} in the image is a "
                                  f"{'link' if stat.S_ISLNK(st.st_mode) else 'different kind of file'}; refusing")
            nsys.move_mount(tree, tfd)
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise NvbindError(f"mount target {m.destination} vanished") from None
            raise
        finally:
            os.close(tfd)
        return f"mounted {m.destination}"
    finally:
        os.close(dfd)
