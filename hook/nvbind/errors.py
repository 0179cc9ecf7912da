"""The two kinds of failure nvbind reports (see DESIGN.md, CLI contract)."""


class NvbindError(Exception):
    """A failure of the host or of nvbind itself: exit status 1."""

    exit_code = 1


class InputError(NvbindError):
    """Bad input (usage, config.json, state, request): exit status 2."""

    exit_code = 2
