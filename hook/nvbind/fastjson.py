"""JSON through the C accelerator `_json` directly.

`import json` costs ~12 ms at start-up (json.decoder pulls in `re`, and `re` pulls in
`enum`); the C scanner and encoder behind it cost almost nothing. Same results as
json.loads / json.dumps(separators=(",", ":")); errors still come out as ValueError.
"""

try:
    import _json
except ImportError:  # pragma: no cover - CPython always has it
    _json = None

_WS = " \t\n\r"


class _Ctx:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict = {}

    @staticmethod
    def parse_constant(name):
        return {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}[name]


def loads(text: str):
    if _json is None:
        import json
        return json.loads(text)
    _Ctx.memo = {}
    scan = _json.make_scanner(_Ctx)
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
        return json.loads(text)
    finally:
        _Ctx.memo = {}
    while end < n and text[end] in _WS:
        end += 1
    if end != n:
        raise ValueError(f"Extra data: char {end}")
    return obj


def _default(o):
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def dumps(obj, sort_keys: bool = False) -> str:
    if _json is None:
        import json
        return json.dumps(obj, separators=(",", ":"), sort_keys=sort_keys, ensure_ascii=False)
    enc = _json.make_encoder(None, _default, _json.encode_basestring, None, ":", ",",
                             sort_keys, False, True)
    return "".join(enc(obj, 0))
