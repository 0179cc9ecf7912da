"""Small value classes for the hot path.

`dataclasses` costs ~25 ms to import (it pulls in `inspect`), more than the rest of a hook
run; this gives the same keyword/positional constructor, equality, hashing, repr and a
JSON view for classes that list their fields in __slots__.
"""


def plain(v):
    """JSON-ready view: records become dicts, tuples become lists."""
    if isinstance(v, Record):
        return v.to_json()
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    return v


class Record:
    __slots__ = ()
    DEFAULTS: dict = {}      # field -> value; list/dict types are called for a fresh one
    FROZEN = True

    def __init__(self, *args, **kw):
        names = self.__slots__
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes {len(names)} fields")
        for n, v in zip(names, args):
            object.__setattr__(self, n, v)
        for n in names[len(args):]:
            if n in kw:
                v = kw.pop(n)
            elif n in self.DEFAULTS:
                v = self.DEFAULTS[n]
                if v in (list, dict):
                    v = v()
            else:
                raise TypeError(f"{type(self).__name__}: missing field {n!r}")
            object.__setattr__(self, n, v)
        if kw:
            raise TypeError(f"{type(self).__name__}: unknown fields {sorted(kw)}")

    def __setattr__(self, name, value):
        if self.FROZEN:
            raise AttributeError(f"{type(self).__name__} is immutable")
        object.__setattr__(self, name, value)

    def _key(self):
        return tuple(getattr(self, n) for n in self.__slots__)

    def __eq__(self, other):
        return type(other) is type(self) and other._key() == self._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({inner})"

    def to_json(self) -> dict:
        return {n: plain(getattr(self, n)) for n in self.__slots__}
