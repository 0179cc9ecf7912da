"""poststop: release what the container held (exclusive GPU leases). Safe to call twice,
for a container nvbind never touched, or with a state it cannot read (poststop failures
are only warnings for the engine anyway)."""

import os
import sys

from nvbind.errors import InputError


def run(settings, rest: list[str]) -> int:
    from nvbind import oci
    from nvbind.apply import leases
    data = oci.read_stdin(sys.stdin.buffer)
    try:
        state = oci.parse_state(data)
    except InputError as e:
        settings.result["note"] = f"unreadable state ignored: {e}"
        return 0
    settings.result["id"] = state["id"]
    released = leases.release(settings.config["lease_dir"], state["id"],
                              os.path.abspath(state["bundle"]))
    if released:
        settings.result["released"] = released
    return 0
