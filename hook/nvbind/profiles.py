"""Workload profiles. Only `default` exists so far; profiles add env, capabilities, mounts."""
from __future__ import annotations

from dataclasses import dataclass

from nvbind.errors import InputError


@dataclass(frozen=True)
class Profile:
    name: str
    env: tuple[tuple[str, str, str], ...] = ()   # (name, value, what reads it)
    capabilities: tuple[str, ...] | None = None  # None: as requested


BUILTIN = {"default": Profile("default")}


def get(name: str | None) -> Profile:
    name = name or "default"
    try:
        return BUILTIN[name]
    except KeyError:
        raise InputError(f"unknown profile '{name}'; known: {', '.join(sorted(BUILTIN))}") from None
