"""core.bencode: canonical input only, bounded, spans of top-level values, libtorrent-compatible."""

from __future__ import annotations

import libtorrent as lt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.bencode import BencodeError, bdecode, bdecode_spans, bencode

values = st.recursive(
    st.one_of(st.integers(-2**70, 2**70), st.binary(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.binary(max_size=6), inner, max_size=4)),
    max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(values)
def test_round_trip_and_same_bytes_as_libtorrent(value: object) -> None:
    data = bencode(value)  # type: ignore[arg-type]
    assert bdecode(data) == value
    if not isinstance(value, int) or -2**63 <= value < 2**63:  # libtorrent ints are 64-bit
        try:
            assert lt.bencode(value) == data
        except OverflowError:
            pass


@pytest.mark.parametrize("data", [
    b"i01e", b"i-0e", b"ie", b"i-e", b"i1", b"i 1e", b"i+1e",  # integers
    b"01:a", b"2:a", b"-1:a", b"1a", b":",  # strings
    b"d1:bi1e1:ai2ee", b"d1:ai1e1:ai2ee", b"di1ei2ee", b"d1:a", b"l", b"le1",  # dicts, lists
    b"", b"x", b"i1ei2e",
])
def test_refused(data: bytes) -> None:
    with pytest.raises(BencodeError):
        bdecode(data)


def test_limits() -> None:
    assert bdecode(b"l" * 100 + b"e" * 100) is not None
    with pytest.raises(BencodeError, match="nested deeper"):
        bdecode(b"l" * 101 + b"e" * 101)
    with pytest.raises(BencodeError, match="more than 3 values"):
        bdecode(b"li1ei2ei3ee", max_tokens=3)
    with pytest.raises(BencodeError, match="larger than"):
        bdecode(b"4:abcd", max_size=5)
    with pytest.raises(BencodeError, match="runs past the end"):
        bdecode(b"99999999999:a")


def test_spans_of_top_level_values() -> None:
    data = b"d1:ai1e4:infod1:xli1eee1:zlee"
    decoded = bdecode_spans(data)
    start, end = decoded.spans[b"info"]
    assert data[start:end] == b"d1:xli1eee"
    assert decoded.value == {b"a": 1, b"info": {b"x": [1]}, b"z": []}
    assert bdecode_spans(b"i1e").spans == {}


def test_bencode_refuses_what_it_cannot_encode() -> None:
    for bad in (True, 1.5, None, {1: 2}):
        with pytest.raises(TypeError):
            bencode(bad)  # type: ignore[arg-type]
    assert bencode({"b": "é", b"a": (1,)}) == b"d1:ali1ee1:b2:\xc3\xa9e"
