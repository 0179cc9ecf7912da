"""createContainer: soname links and the ld cache inside the container (the hook entry
that precreate, the shim and CDI add), with the host's own ldconfig."""

from nvbind.errors import InputError, NvbindError
from nvbind.settings import next_value


def run(settings, rest: list[str]) -> int:
    folders, links, driver, uses = [], [], None, []
    it = iter(rest)
    for a in it:
        if a == "--folder":
            folders.append(next_value(it, a))
        elif a == "--use":
            uses.append(next_value(it, a))
        elif a == "--driver-version":
            driver = next_value(it, a)
        elif a == "--link":
            target, sep, link = next_value(it, a).partition("::")
            if not sep or not target or not link.startswith("/"):
                raise InputError(f"--link wants TARGET::/ABS/LINK, got {target}{sep}{link}")
            links.append((target, link))
        else:
            raise InputError(f"hook createContainer: unknown argument {a!r}")
    from nvbind.doors import state_and_bundle
    state, _cfg, rootfs = state_and_bundle(settings)
    if uses:
        from nvbind.doors import register_user
        register_user(settings, uses, state, _cfg.get("hostname"))
    from nvbind.sysio.root import Root
    try:
        root = Root.open(rootfs)        # the one open by path; everything else through it
    except OSError as e:
        raise NvbindError(f"container rootfs {rootfs}: {e.strerror}") from None
    then = None
    try:
        then = _apply(settings, root, links, folders, driver)
    except OSError as e:
        raise NvbindError(f"inside the container: {e}") from None
    finally:
        if then is None:        # else the handover needs it, until the exec
            root.close()
    if then is not None:
        settings.then = then
        settings.result["ldconfig"] = "exec"    # its outcome is the hook's exit status
    return 0


def _apply(settings, root, links, folders, driver):
    """Links, then the ld cache: returns what makes this process ldconfig (run by cli
    once the log line is written, apply/ldcache.handover), or None."""
    from nvbind.apply import ldcache
    ldcache.make_links(root, links)
    if not folders:
        return None
    from nvbind.apply import compat
    folders = compat.prepare(root, driver, folders)
    if folders[0] == compat.COMPAT_DIR:
        settings.result["cuda_compat"] = compat.COMPAT_DIR
    return ldcache.handover(root, folders, settings.config.get("ldconfig") or None)
