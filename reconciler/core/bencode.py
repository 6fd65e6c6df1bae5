"""A strict bdecoder for torrent locks, in pure Python (no libtorrent, no I/O).

Strict because a lock's identity is the hash of its bytes: only the canonical encoding is
accepted (integers without leading zeros or "-0", dict keys as byte strings in strictly
increasing byte order, nothing after the top-level value), so two different byte strings never
decode to the same value. Bounded (nesting depth, number of values, input size) because locks
may come from a peer. Every failure is a `BencodeError` (a ValueError) saying where.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Union

Value = Union[int, bytes, list["Value"], dict[bytes, "Value"]]

MAX_DEPTH = 100  # libtorrent's default decode depth limit
MAX_TOKENS = 3_000_000  # libtorrent's default token limit for a .torrent
MAX_SIZE = 256 * 1024 * 1024


class BencodeError(ValueError):
    """The input is not canonical bencoding within the limits."""


@dataclass(frozen=True)
class Decoded:
    """A decoded value and, when it is a dict, the byte span [start, end) of each of its values.

    The spans let a caller hash the exact bytes of a top-level entry (the `info` dict of a
    torrent) instead of re-encoding what was decoded.
    """

    value: Value
    spans: Mapping[bytes, tuple[int, int]] = field(default_factory=dict)


class _Decoder:
    def __init__(self, data: bytes, max_depth: int, max_tokens: int) -> None:
        self.data = data
        self.pos = 0
        self.tokens = 0
        self.max_depth = max_depth
        self.max_tokens = max_tokens
        self.spans: dict[bytes, tuple[int, int]] = {}

    def fail(self, what: str, at: int | None = None) -> BencodeError:
        return BencodeError(f"at byte {self.pos if at is None else at}: {what}")

    def value(self, depth: int) -> Value:
        data, pos = self.data, self.pos
        if pos >= len(data):
            raise self.fail("unexpected end of data")
        self.tokens += 1
        if self.tokens > self.max_tokens:
            raise self.fail(f"more than {self.max_tokens} values")
        c = data[pos]
        if c == 0x69:  # i
            return self.integer()
        if 0x30 <= c <= 0x39:
            return self.string()
        if c in (0x6C, 0x64):  # l, d
            if depth >= self.max_depth:
                raise self.fail(f"nested deeper than {self.max_depth}")
            return self.list(depth) if c == 0x6C else self.dict(depth)
        raise self.fail(f"unexpected byte {bytes([c])!r}")

    def integer(self) -> int:
        start = self.pos + 1
        end = self.data.find(b"e", start)
        if end < 0:
            raise self.fail("unterminated integer")
        digits = self.data[start:end]
        body = digits[1:] if digits[:1] == b"-" else digits
        if not body or not body.isdigit() or not body.isascii():
            raise self.fail(f"invalid integer {digits[:32]!r}")
        if (body[:1] == b"0" and len(body) > 1) or digits == b"-0":
            raise self.fail(f"non-canonical integer {digits[:32]!r}")
        self.pos = end + 1
        return int(digits)

    def string(self) -> bytes:
        colon = self.data.find(b":", self.pos, self.pos + 21)
        if colon < 0:
            raise self.fail("invalid string length")
        digits = self.data[self.pos:colon]
        if not digits.isdigit() or (digits[:1] == b"0" and len(digits) > 1):
            raise self.fail(f"invalid string length {digits!r}")
        n = int(digits)
        start = colon + 1
        if n > len(self.data) - start:
            raise self.fail(f"string of {n} bytes runs past the end")
        self.pos = start + n
        return self.data[start:self.pos]

    def list(self, depth: int) -> list[Value]:
        self.pos += 1
        out: list[Value] = []
        while True:
            if self.pos >= len(self.data):
                raise self.fail("unterminated list")
            if self.data[self.pos] == 0x65:  # e
                self.pos += 1
                return out
            out.append(self.value(depth + 1))

    def dict(self, depth: int) -> dict[bytes, Value]:
        self.pos += 1
        out: dict[bytes, Value] = {}
        last: bytes | None = None
        while True:
            if self.pos >= len(self.data):
                raise self.fail("unterminated dict")
            c = self.data[self.pos]
            if c == 0x65:
                self.pos += 1
                return out
            at = self.pos
            if not 0x30 <= c <= 0x39:
                raise self.fail("dict key is not a byte string")
            self.tokens += 1
            key = self.string()
            if last is not None and key <= last:
                raise self.fail(f"dict key {key[:32]!r} is "
                                f"{'repeated' if key == last else 'out of order'}", at)
            last = key
            start = self.pos
            out[key] = self.value(depth + 1)
            if depth == 0:
                self.spans[key] = (start, self.pos)


def bdecode_spans(data: bytes, *, max_depth: int = MAX_DEPTH, max_tokens: int = MAX_TOKENS,
                  max_size: int = MAX_SIZE) -> Decoded:
    """Decode `data` (one canonical value, nothing after it), with the top-level dict's spans."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BencodeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_size:
        raise BencodeError(f"larger than {max_size} bytes")
    d = _Decoder(data, max_depth, max_tokens)
    value = d.value(0)
    if d.pos != len(data):
        raise d.fail("trailing data after the value")
    return Decoded(value, d.spans)


def bdecode(data: bytes, **limits: int) -> Value:
    """The value `data` encodes; BencodeError unless it is exactly one canonical value."""
    return bdecode_spans(data, **limits).value


def bencode(value: Value) -> bytes:
    """Canonical encoding of `value` (str is encoded as UTF-8; dict keys are sorted)."""
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: object, out: list[bytes]) -> None:
    if isinstance(value, bool):
        raise TypeError("booleans cannot be bencoded")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, (bytes, str)):
        raw = value.encode("utf-8") if isinstance(value, str) else value
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, (list, tuple)):
        out.append(b"l")
        for v in value:
            _encode(v, out)
        out.append(b"e")
    elif isinstance(value, dict):
        items = [(k.encode("utf-8") if isinstance(k, str) else k, v) for k, v in value.items()]
        if not all(isinstance(k, bytes) for k, _ in items):
            raise TypeError("dict keys must be str or bytes")
        items.sort(key=lambda kv: kv[0])
        out.append(b"d")
        for k, v in items:
            _encode(k, out)
            _encode(v, out)
        out.append(b"e")
    else:
        raise TypeError(f"{type(value).__name__} cannot be bencoded")
