"""Human-friendly sizes and durations, as written in the state repo and the node config.

Sizes: an integer number of bytes, or a number with a unit. Binary units (`KiB`, `MiB`, `GiB`,
`TiB`, `PiB`, `EiB`, also written `Ki`, `Mi`, ...) are powers of 1024; decimal units (`kB`/`KB`,
`MB`, `GB`, `TB`, `PB`, `EB`, also written `k`/`K`, `M`, `G`, ...) are powers of 1000; `B` is a
byte. A fractional number is allowed with a unit (`1.5GiB`) and rounded down to whole bytes.

Durations: a number of seconds, or a sequence of number+unit parts (`250ms`, `30s`, `10m`,
`1h30m`, `2d`), units `ms`, `s`, `m`, `h`, `d`.

The JSON Schemas in `schemas/` use `SIZE_PATTERN` and `DURATION_PATTERN` (kept identical here).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

__all__ = ["parse_size", "parse_duration", "format_bytes", "SIZE_PATTERN", "DURATION_PATTERN"]

_SIZE_UNITS: dict[str, int] = {"": 1, "B": 1}
for _i, _p in enumerate("KMGTPE", start=1):
    _SIZE_UNITS[_p + "iB"] = _SIZE_UNITS[_p + "i"] = 1024**_i
    _SIZE_UNITS[_p + "B"] = _SIZE_UNITS[_p] = 1000**_i
_SIZE_UNITS["kB"] = _SIZE_UNITS["k"] = 1000

# Also in schemas/*.schema.json ("size" definitions): keep them in sync.
SIZE_PATTERN = r"^ *[0-9]+(\.[0-9]+)? *([kKMGTPE]i?B?|B)? *$"
DURATION_PATTERN = r"^ *([0-9]+(\.[0-9]+)?|([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+) *$"

_SIZE_RE = re.compile(r" *([0-9]+(?:\.[0-9]+)?) *([A-Za-z]*) *")
_DURATION_PART_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_SIZE_HELP = "expected a number of bytes or a size such as 512, 200MiB, 1.5GiB, 2TiB, 10GB"
_DURATION_HELP = "expected seconds or a duration such as 250ms, 30s, 10m, 1h30m, 2d"


def parse_size(value: int | str) -> int:
    """Bytes from an integer or a string such as `"2TiB"`, `"200MiB"`, `"10GB"`, `"512"`.

    Raises ValueError (with the offending value and the accepted forms) for anything else,
    including negative numbers, booleans and unknown units.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid size {value!r}: {_SIZE_HELP}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid size {value}: must not be negative")
        return int(value)
    if isinstance(value, float):
        if math.isfinite(value) and value >= 0 and value == int(value):
            return int(value)
        raise ValueError(f"invalid size {value!r}: {_SIZE_HELP}")
    if not isinstance(value, str):
        raise ValueError(f"invalid size {value!r}: {_SIZE_HELP}")
    m = _SIZE_RE.fullmatch(value)
    if not m:
        if value.strip().startswith("-"):
            raise ValueError(f"invalid size {value!r}: must not be negative")
        raise ValueError(f"invalid size {value!r}: {_SIZE_HELP}")
    number, unit = m.groups()
    if unit not in _SIZE_UNITS:
        raise ValueError(
            f"invalid size {value!r}: unknown unit {unit!r} (use B, KiB, MiB, GiB, TiB, PiB, "
            f"EiB or kB, MB, GB, TB, PB, EB)"
        )
    if "." in number and not unit:
        raise ValueError(f"invalid size {value!r}: a number of bytes must be whole")
    try:
        return int(Decimal(number) * _SIZE_UNITS[unit])
    except InvalidOperation:  # pragma: no cover - the regex only lets digits through
        raise ValueError(f"invalid size {value!r}: {_SIZE_HELP}") from None


def format_bytes(n: int | float) -> str:
    """Bytes for people, one decimal in binary units: 512 -> "512 B", 1536 -> "1.5 KiB".

    The one formatter of the CLI's tables and messages (TiB is the largest unit, so a cluster's
    total never turns into a unit nobody reads).
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def parse_duration(value: int | float | str) -> float:
    """Seconds from a number or a string such as `"10m"`, `"30s"`, `"1h30m"`, `"250ms"`.

    A plain number (or numeric string) is seconds. Raises ValueError for anything else,
    including negative values and booleans.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: {_DURATION_HELP}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"invalid duration {value!r}: must be a non-negative number")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"invalid duration {value!r}: {_DURATION_HELP}")
    text = value.strip()
    if re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", text):
        return float(text)
    if not text:
        raise ValueError(f"invalid duration {value!r}: {_DURATION_HELP}")
    total = 0.0
    pos = 0
    for m in _DURATION_PART_RE.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text):
        if text.startswith("-"):
            raise ValueError(f"invalid duration {value!r}: must not be negative")
        raise ValueError(f"invalid duration {value!r}: {_DURATION_HELP}")
    return total

