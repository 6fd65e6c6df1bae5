"""core.timefmt: the status document's timestamps to Unix time."""

from __future__ import annotations

import pytest

from reconciler.core.timefmt import rfc3339_to_epoch


def test_parses_utc_and_offsets() -> None:
    assert rfc3339_to_epoch("1970-01-01T00:00:10Z") == 10.0
    assert rfc3339_to_epoch("1970-01-01T01:00:10+01:00") == 10.0
    assert rfc3339_to_epoch("2024-05-01T12:00:00.5Z") == 1714564800.5


@pytest.mark.parametrize("value", [None, "", 12, "yesterday", "2024-13-01T00:00:00Z"])
def test_anything_else_is_none(value: object) -> None:
    assert rfc3339_to_epoch(value) is None
