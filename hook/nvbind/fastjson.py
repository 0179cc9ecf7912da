"""JSON through the C accelerator `_json` directly, with the rules of the engines' reader.

`import json` costs ~12 ms at start-up (json.decoder pulls in `re`, and `re` pulls in
`enum`); the C scanner and encoder behind it cost almost nothing. Results as json.loads /
json.dumps(separators=(",", ":")), errors as ValueError, and stricter on input:

* runc, crun's Go peers and containerd read config.json with Go's encoding/json, which
  matches object keys to struct fields case-insensitively (bytes.EqualFold) and lets the
  last one win. A config with both `process` and `Process` would be decided on one and run
  with the other, so an object whose keys collide that way (or repeat) is refused;
* NaN, Infinity and -Infinity are not JSON (RFC 8259) and are refused;
* a lone surrogate escape (`"\\ud800"`) cannot be encoded as UTF-8 and is refused.

Output is ASCII-only (non-ASCII as \\u escapes) and never holds NaN or Infinity.
"""

try:
    import _json
except ImportError:  # pragma: no cover - CPython always has it
    _json = None

_WS = " \t\n\r"


def go_fold(key: str) -> str:
    """A key as Go's encoding/json compares it: two keys match when their folds are equal
    (bytes.EqualFold; non-ASCII by unicode.SimpleFold orbits: K KELVIN SIGN is k, LONG S
    is s). Python has no SimpleFold: the smallest single-rune case mapping stands for the
    orbit's smallest member, which agrees on every rune whose orbit case mapping reaches."""
    if key.isascii():
        return key.upper()
    out = []
    for c in key:
        if c.isascii():
            out.append(c.upper())
            continue
        cands = [c]
        for x in (c.lower(), c.upper(), c.lower().upper(), c.upper().lower(), c.title()):
            if len(x) == 1:
                cands.append(x)
                for y in (x.lower(), x.upper()):
                    if len(y) == 1:
                        cands.append(y)
        out.append(min(cands))
    return "".join(out)


def _pairs(pairs):
    d = dict(pairs)
    if len(d) == len(pairs):
        if len(d) < 2:
            return d
        folded = {go_fold(k) for k in d}
        if len(folded) == len(d):
            return d
        seen = {}
        for k in d:
            f = go_fold(k)
            if f in seen:
                raise ValueError(f"keys {_short(seen[f])} and {_short(k)} in one object differ "
                                 "only in case (Go's decoder, used by runc, takes them as one)")
            seen[f] = k
    seen = set()
    for k, _ in pairs:
        if k in seen:
            raise ValueError(f"key {_short(k)} appears twice in one object")
        seen.add(k)
    raise ValueError("duplicate keys")  # pragma: no cover


def _short(s: str) -> str:
    return ascii(s if len(s) <= 40 else s[:40] + "...")


def _float(text: str) -> float:
    v = float(text)
    if v in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:40]} is out of range")
    return v


class _Ctx:
    strict = True
    object_hook = None
    object_pairs_hook = staticmethod(_pairs)
    parse_float = staticmethod(_float)
    parse_int = int
    memo: dict = {}

    @staticmethod
    def parse_constant(name):
        raise ValueError(f"{name} is not JSON")


class _Own(_Ctx):
    """nvbind's own files (its caches, written by fastjson.dumps): no key checks needed,
    and they cost a hook ~0.3 ms on the inventory."""
    object_pairs_hook = None


def _surrogates(obj) -> bool:
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, str):
            try:
                o.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, list):
            stack.extend(o)
    return False



def loads(text: str, own: bool = False):
    """own: the text is one nvbind wrote itself (a trusted cache): the Go key rules are
    not checked (NaN, Infinity and lone surrogates still are)."""
    if _json is None:  # pragma: no cover
        import json
        obj = json.loads(text, object_pairs_hook=None if own else _pairs,
                         parse_constant=_Ctx.parse_constant)
    else:
        obj = _scan(text, _Own if own else _Ctx)
    # a lone surrogate can only come from a \u escape (text decoded from UTF-8 has none)
    if "\\u" in text and _surrogates(obj):
        raise ValueError("a string holds a lone surrogate (\\ud800-\\udfff), which is not "
                         "Unicode text")
    return obj


def _scan(text: str, ctx=_Ctx):
    ctx.memo = {}
    scan = _json.make_scanner(ctx)
    n = len(text)
    i = 0
    while i < n and text[i] in _WS:
        i += 1
    try:
        obj, end = scan(text, i)
    except StopIteration as e:
        raise ValueError(f"Expecting value: char {e.value}") from None
    except SystemError:
        # the C scanner reports some errors only once json.decoder is loaded: let the
        # json module produce the proper message (error path only)
        import json
        return json.loads(text, object_pairs_hook=_pairs, parse_constant=_Ctx.parse_constant)
    finally:
        ctx.memo = {}
    while end < n and text[end] in _WS:
        end += 1
    if end != n:
        raise ValueError(f"Extra data: char {end}")
    return obj


def _default(o):
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def dumps(obj, sort_keys: bool = False) -> str:
    """Compact, ASCII-only JSON; ValueError for NaN or Infinity."""
    if _json is None:  # pragma: no cover
        import json
        return json.dumps(obj, separators=(",", ":"), sort_keys=sort_keys, allow_nan=False)
    enc = _json.make_encoder(None, _default, _json.encode_basestring_ascii, None, ":", ",",
                             sort_keys, False, False)
    return "".join(enc(obj, 0))
