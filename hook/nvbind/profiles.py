"""Workload profiles. Only `default` exists so far; profiles add env, capabilities, mounts."""
from __future__ import annotations

from nvbind.errors import InputError
from nvbind.record import Record


class Profile(Record):
    """env: ((name, value, what reads it), ...); capabilities: None means as requested."""

    __slots__ = ("name", "env", "capabilities")
    DEFAULTS = {"env": (), "capabilities": None}


BUILTIN = {"default": Profile("default")}


def get(name: str | None) -> Profile:
    name = name or "default"
    try:
        return BUILTIN[name]
    except KeyError:
        raise InputError(f"unknown profile '{name}'; known: {', '.join(sorted(BUILTIN))}") from None
