"""Failed origin reads, counted for `syncbit_origin_errors_total{dataset,origin,reason}`.

The gateway calls `record()` where it already logs a failed read or blames an origin for bad
bytes; the metrics (status_file.NodeMetrics) read `snapshot()`. Process-wide, as a Prometheus
counter is: it starts at 0 with the process. `reason` is one of a few fixed words, never the
error text (unbounded, and it may carry a URL)."""

from __future__ import annotations

import re
import threading
from collections import Counter

REASONS = ("timeout", "http_4xx", "http_5xx", "short_read", "connection", "hash_mismatch",
           "other")

_lock = threading.Lock()
_counts: Counter[tuple[str, str, str]] = Counter()

#: An HTTP status code: `HTTP 503`, `status 500`, `404 Not Found`; not a port (`host:443`).
_HTTP = re.compile(r"(?<![:\d.])\b(?:HTTP/?[\d.]*\s*|status\s*)?([1-5])\d\d\b"
                   r"(?=\s+[A-Za-z]|$|[:;,)])")


def reason_of(message: str) -> str:
    """A fixed reason word for an origin error message."""
    m = message.lower()
    if "hash check" in m or "hash mismatch" in m:
        return "hash_mismatch"
    if "timeout" in m or "timed out" in m:
        return "timeout"
    if "the origin sent" in m or "short read" in m or "bytes were read" in m:
        return "short_read"
    http = _HTTP.search(message)
    if http:
        return "http_4xx" if http.group(1) == "4" else "http_5xx" if http.group(1) == "5" \
            else "other"
    if any(w in m for w in ("connect", "refused", "reset", "unreachable", "resolve",
                            "name or service")):
        return "connection"
    return "other"


def record(dataset: str, origin: str, message: str) -> None:
    with _lock:
        _counts[(dataset, origin, reason_of(message))] += 1


def snapshot() -> dict[tuple[str, str, str], int]:
    """(dataset, origin, reason) -> failed reads since the process started."""
    with _lock:
        return dict(_counts)
