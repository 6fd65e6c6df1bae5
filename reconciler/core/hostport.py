"""`host:port` parsing, one definition for node specs, the node config, the API and the swarm.

IPv6 addresses must be written in brackets (`[fd00::11]:6881`), as the schemas require: without
them `::1:7070` is ambiguous. The host comes back without brackets, ready for a socket call.
"""

from __future__ import annotations

import ipaddress

MAX_PORT = 65535


def parse_hostport(value: str, *, allow_empty_host: bool = False, min_port: int = 0,
                   what: str = "address") -> tuple[str, int]:
    """(host, port) from `host:port`, `[v6addr]:port`, or `:port` when `allow_empty_host`.

    ValueError saying what is wrong (the port range is checked separately, so a caller can tell
    a well-formed address with a port out of range from a malformed one by its message).
    """
    host, sep, port_s = value.strip().rpartition(":")
    if not sep or not port_s.isdigit() or not port_s.isascii():
        raise ValueError(f"{what} {value!r}: expected host:port, e.g. 127.0.0.1:7070 or [::1]:7070")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not host:
            raise ValueError(f"{what} {value!r}: empty IPv6 address in brackets")
    elif ":" in host or "[" in host or "]" in host:
        raise ValueError(f"{what} {value!r}: put an IPv6 address in brackets, e.g. [::1]:7070")
    if not host and not allow_empty_host:
        raise ValueError(f"{what} {value!r}: expected host:port, the host is missing")
    if host and all(c.isdigit() or c == "." for c in host):
        # No host name is all digits (RFC 1123): this is meant as an IPv4 address.
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{what} {value!r}: {host} is not an IPv4 address") from None
    port = int(port_s)
    if not min_port <= port <= MAX_PORT:
        raise ValueError(f"port must be between {min_port} and {MAX_PORT} (got {port})")
    return host, port


def join_hostport(host: str, port: int) -> str:
    """The inverse of parse_hostport: brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
