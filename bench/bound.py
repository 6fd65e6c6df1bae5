"""The fluid lower bound on the time for N nodes to each hold a dataset, and size/rate parsing.

Pure functions (no I/O) so that they can be unit-tested (tests/bench/test_bound.py) and so that
every figure the benchmark prints is traceable to one formula.

The fluid model (the usual one for peer-to-peer distribution, e.g. Kumar & Ross 2006) ignores
latency, pieces and protocol overhead; the result is a bound no real system beats, so
`seconds / T_lb` says how far from physically possible a run is:

    T_lb = max(S / u_origin,            the origin must send every byte at least once
               S / d_min,               the slowest downloader must receive every byte
               N * S / (u_origin + sum u_i))   N*S bytes must be uploaded in total, by the
                                                origin and the nodes together
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20,
          "mb": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([a-zA-Z]*)\s*(?:/s)?\s*")


def parse_size(text: str) -> int:
    """Bytes in `text`: "64MiB", "128KiB", "4m", "1.5GiB", "1000" (binary units: K = 1024; a
    trailing "/s" is allowed so that rates read naturally). Raises ValueError otherwise."""
    m = _SIZE.fullmatch(text)
    if m is None or m.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (e.g. 64MiB, 128KiB, 4M)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def fluid_lower_bound(size: int, origin_up: float, node_up: Sequence[float],
                      node_down: Sequence[float]) -> float:
    """Seconds, at least, until each of the N = len(node_up) nodes holds all `size` bytes that
    start on the origin alone (bytes and bytes/s; rates must be positive)."""
    if len(node_up) != len(node_down) or not node_up:
        raise ValueError("one upload and one download rate per node, at least one node")
    if origin_up <= 0 or min(node_up) <= 0 or min(node_down) <= 0:
        raise ValueError("rates must be positive")
    n = len(node_up)
    return max(size / origin_up, size / min(node_down), n * size / (origin_up + sum(node_up)))
