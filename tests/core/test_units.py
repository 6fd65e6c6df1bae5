import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.units import DURATION_PATTERN, SIZE_PATTERN, parse_duration, parse_size

KiB, MiB, GiB, TiB = 1024, 1024**2, 1024**3, 1024**4


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (512, 512),
        ("0", 0),
        ("512", 512),
        ("4KiB", 4 * KiB),
        ("200MiB", 200 * MiB),
        ("1.5GiB", 3 * GiB // 2),
        ("2TiB", 2 * TiB),
        ("10GB", 10 * 10**9),
        ("10G", 10 * 10**9),
        ("3Gi", 3 * GiB),
        ("1kB", 1000),
        ("1KB", 1000),
        ("7B", 7),
        (" 2 TiB ", 2 * TiB),
        ("0.5KiB", 512),
        (2.0, 2),
    ],
)
def test_parse_size(value: object, expected: int) -> None:
    assert parse_size(value) == expected  # type: ignore[arg-type]
    assert type(parse_size(value)) is int  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "invalid size ''"),
        ("abc", "expected a number of bytes"),
        ("-1", "must not be negative"),
        (-5, "must not be negative"),
        ("2XB", "unknown unit 'XB'"),
        ("2 tib", "unknown unit 'tib'"),
        ("1.5", "must be whole"),
        ("1e3", "invalid size '1e3'"),
        (True, "invalid size True"),
        (None, "invalid size None"),
        (1.5, "invalid size 1.5"),
        ("2TiB2", "invalid size"),
    ],
)
def test_parse_size_rejects(value: object, fragment: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_size(value)  # type: ignore[arg-type]
    assert fragment in str(exc.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0.0),
        (30, 30.0),
        (1.5, 1.5),
        ("45", 45.0),
        ("2.5", 2.5),
        ("30s", 30.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("1m30s", 90.0),
        ("2d", 172800.0),
        ("1.5h", 5400.0),
        (" 10m ", 600.0),
    ],
)
def test_parse_duration(value: object, expected: float) -> None:
    assert parse_duration(value) == pytest.approx(expected)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "invalid duration ''"),
        ("10", None),
        ("ten minutes", "expected seconds or a duration"),
        ("10x", "expected seconds or a duration"),
        ("-5s", "must not be negative"),
        (-1, "non-negative"),
        (float("nan"), "non-negative"),
        (True, "invalid duration True"),
        ("h1", "invalid duration"),
        ("1h 30m", "invalid duration"),
    ],
)
def test_parse_duration_rejects(value: object, fragment: str | None) -> None:
    if fragment is None:  # sanity: the valid neighbour of the cases below
        assert parse_duration(value) == 10.0  # type: ignore[arg-type]
        return
    with pytest.raises(ValueError) as exc:
        parse_duration(value)  # type: ignore[arg-type]
    assert fragment in str(exc.value)


@given(st.integers(min_value=0, max_value=2**70),
       st.sampled_from(["", "B", "KiB", "MiB", "GiB", "TiB", "kB", "MB", "GB", "TB"]))
def test_size_pattern_matches_parser(n: int, unit: str) -> None:
    """The schemas' pattern and the parser agree on what is a size."""
    text = f"{n}{unit}"
    assert re.search(SIZE_PATTERN, text)
    assert parse_size(text) >= n


@given(st.text(alphabet="0123456789.kKMGTPEiBbx -", max_size=8))
def test_size_parser_accepts_only_what_the_pattern_accepts(text: str) -> None:
    try:
        parse_size(text)
    except ValueError:
        ok = False
    else:
        ok = True
    if ok:
        assert re.search(SIZE_PATTERN, text), text


@given(st.text(alphabet="0123456789.smhd -", max_size=8))
def test_duration_parser_and_pattern_agree(text: str) -> None:
    try:
        parse_duration(text)
    except ValueError:
        ok = False
    else:
        ok = True
    assert ok == bool(re.search(DURATION_PATTERN, text)), text


def test_schemas_use_the_same_patterns() -> None:
    schemas = Path(__file__).resolve().parents[2] / "schemas"
    for name in ("node", "config"):
        text = json.loads((schemas / f"{name}.schema.json").read_text())
        size = text["$defs"]["size"]["anyOf"][1]["pattern"]
        assert size == SIZE_PATTERN
    config = json.loads((schemas / "config.schema.json").read_text())
    assert config["$defs"]["duration"]["anyOf"][1]["pattern"] == DURATION_PATTERN


@pytest.mark.parametrize(("n", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                         (200 * MiB, "200.0 MiB"), (2 * TiB, "2.0 TiB"),
                                         (3 * 1024 * TiB, "3072.0 TiB"), (-2048, "-2.0 KiB")])
def test_format_bytes(n: int, text: str) -> None:
    from reconciler.core.units import format_bytes

    assert format_bytes(n) == text
