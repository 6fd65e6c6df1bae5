"""RFC 3339 timestamps (as the status document writes them) to Unix time."""

from __future__ import annotations

from datetime import datetime


def rfc3339_to_epoch(ts: object) -> float | None:
    """Seconds since the epoch of `2024-05-01T12:00:00Z` (or with an offset); None if `ts` is
    not such a string, so a status document written by another version never breaks a reader."""
    if not isinstance(ts, str) or not ts:
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
