"""core.hostport: the one host:port parser."""

from __future__ import annotations

import pytest

from reconciler.core.hostport import join_hostport, parse_hostport


@pytest.mark.parametrize("value, expected", [
    ("127.0.0.1:7070", ("127.0.0.1", 7070)), ("[::1]:7070", ("::1", 7070)),
    ("gpu-01.example.net:6881", ("gpu-01.example.net", 6881)), (" h:0 ", ("h", 0)),
    ("[fd00::11]:65535", ("fd00::11", 65535)),
])
def test_valid(value: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(value) == expected
    assert parse_hostport(join_hostport(*expected)) == expected


@pytest.mark.parametrize("value", ["7070", "host:", "host:x", "::1:7070", "h:70000", ":7070",
                                   "[]:1", "h:٣", "[::1:2", "10.0.0.256:6881", "1.2.3:80"])
def test_invalid(value: str) -> None:
    with pytest.raises(ValueError):
        parse_hostport(value)


def test_empty_host_and_port_range() -> None:
    assert parse_hostport(":7070", allow_empty_host=True) == ("", 7070)
    with pytest.raises(ValueError, match=r"port must be between 1 and 65535 \(got 0\)"):
        parse_hostport("h:0", min_port=1)
    with pytest.raises(ValueError, match="api listen address 'x'"):
        parse_hostport("x", what="api listen address")
