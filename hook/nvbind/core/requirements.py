"""NVIDIA_REQUIRE_* constraints: `cuda>=12.2 driver>=535 arch=9.0 brand=tesla`.

Within one variable, space-separated constraints are ORed and comma-separated ones ANDed
(`cuda>=12.0,driver>=535 brand=tesla`: (cuda AND driver) OR brand); several variables are
ANDed. cuda and driver are host values; arch (compute capability) and brand are checked
for every selected GPU. A value nvbind does not know (procfs has no CUDA version, arch or
brand: those come from NVML through `nvbind info --refresh`) fails the check, saying so.
"""

from nvbind.errors import InputError, NvbindError

OPS = (">=", "<=", "!=", "==", ">", "<", "=")
KEYS = ("cuda", "driver", "arch", "brand")


def _version(v: str, where: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in v.split("."))
    except ValueError:
        raise InputError(f"{where}: '{v}' is not a version") from None


def parse(expr: str, where: str) -> list[list[tuple[str, str, str]]]:
    """[[(key, op, value) ANDed] ORed]."""
    alts = []
    for alt in expr.split():
        terms = []
        for t in alt.split(","):
            if not t:
                continue
            for op in OPS:
                key, sep, value = t.partition(op)
                if sep and key in KEYS and value:
                    terms.append((key, "==" if op == "=" else op, value))
                    break
            else:
                raise InputError(f"{where}: cannot read constraint '{t[:60]}' "
                                 f"(expected {'|'.join(KEYS)} with one of {' '.join(OPS)})")
        if terms:
            alts.append(terms)
    return alts


def _cmp(have, op, want) -> bool:
    return {">=": have >= want, "<=": have <= want, ">": have > want, "<": have < want,
            "==": have == want, "!=": have != want}[op]


def _term_ok(key, op, value, host: dict, gpu) -> tuple[bool, str]:
    if key in ("cuda", "driver"):
        have = host.get(key)
        if have is None:
            return False, f"{key} unknown on this host"
        # compare on the constraint's precision: driver>=535 accepts 535.54.03
        want = _version(value, key)
        return _cmp(_version(have, key)[:len(want)], op, want), f"{key} is {have}"
    have = getattr(gpu, key, None) if gpu is not None else None
    if have is None:
        return False, f"{key} of GPU {getattr(gpu, 'index', '?')} unknown (needs NVML: nvbind info --refresh)"
    if key == "arch":
        want = _version(value, key)
        return _cmp(_version(have, key)[:len(want)], op, want), f"arch of GPU {gpu.index} is {have}"
    return _cmp(have.lower(), op, value.lower()), f"brand of GPU {gpu.index} is {have}"


def check(requires, host: dict, gpus) -> None:
    """Raise NvbindError naming the failed requirement and the host's values."""
    for expr in requires:
        alts = parse(expr, "NVIDIA_REQUIRE")
        for gpu in gpus or [None]:
            facts = []
            if any(all(_ok(t, host, gpu, facts) for t in terms) for terms in alts):
                continue
            raise NvbindError(f"requirement '{expr}' not met: {'; '.join(dict.fromkeys(facts))}")


def _ok(term, host, gpu, facts) -> bool:
    ok, fact = _term_ok(*term, host, gpu)
    facts.append(fact)
    return ok
