"""precreate (podman): OCI config.json on stdin -> the edited config.json on stdout.

podman runs precreate hooks in the caller's working directory, not the bundle, and gives
no container id: nothing here is keyed per container. Leases are taken at createRuntime,
whose state has the id and bundle (the edits add that hook); shared and virtual users
register (and are refused a GPU held exclusively) from their createContainer entry. No
lease is checked here: podman drops a precreate hook's stderr ("exit status 1"), while the
runtime passes on what those entries say."""

import sys

from nvbind.errors import InputError


def run(settings, rest: list[str]) -> int:
    from nvbind import oci
    if rest:
        raise InputError(f"hook precreate takes no arguments, got {rest[0]!r}")
    text = oci.read_stdin(sys.stdin.buffer)
    cfg = oci.parse_config(text, "config.json on stdin")
    if isinstance(cfg.get("hostname"), str):
        settings.result["hostname"] = cfg["hostname"]
    if not oci.may_request(text):
        # no key that could ask for a GPU appears anywhere (and no \u escape could hide
        # one): the config goes back byte for byte, without loading anything else
        sys.stdout.write(text)
        return 0
    from nvbind import decide
    from nvbind.doors import host, record, self_command
    d = decide.decide(settings, cfg, host(settings), lambda: self_command(settings))
    record(settings, d)
    if d.edits is None or d.edits.empty:
        sys.stdout.write(text)
        return 0
    from nvbind.apply import spec
    for note in spec.apply(cfg, d.edits):
        from nvbind import log
        log.note(note)
    sys.stdout.write(oci.dump(cfg))
    sys.stdout.write("\n")
    return 0
