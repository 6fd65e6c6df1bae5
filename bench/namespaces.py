"""A shaped virtual network: one network namespace per host, a veth pair from each to one bridge
in the root namespace, and a `tc tbf` on BOTH ends of every veth.

Why this shape: tbf shapes a device's egress only, so the namespace end of a veth shapes what the
host uploads and the bridge end what it downloads; every byte between two hosts crosses the
sender's upload and the receiver's download shaper, like two machines on a switch. The bridge
sits in the root namespace with an address of its own, so the benchmark process (root
namespace) reaches every host (the origin's counter, `lock`) without entering a namespace.

Every name starts with PREFIX (network namespace `sbb-<host>`, links `sbb-<host>h`/`sbb-<host>c`,
bridge `sbb-br`): `cleanup_leftovers()` removes what an earlier run left after a SIGKILL. Only
one benchmark can run on a machine at a time.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

PREFIX = "sbb-"
BRIDGE = PREFIX + "br"
SUBNET = "10.213.0"  # /24; .254 is the bridge, hosts get the addresses they ask for
BRIDGE_IP = f"{SUBNET}.254"
UNSHAPED = 10 << 30  # bytes/s used to "lift" a shaper (10 GiB/s: CPU-bound long before that)


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=30)


def tbf_args(rate: int) -> list[str]:
    """`tc` arguments of a token bucket of `rate` bytes/s. The bucket holds at least 64 KiB
    (a GSO super-packet fits, so tbf need not segment it) or 20 ms of the rate; up to 100 ms of
    the rate may queue before tbf drops (TCP then backs off, as behind a real bottleneck)."""
    burst = max(64 << 10, rate // 50)
    return ["tbf", "rate", f"{rate * 8}bit", "burst", str(burst), "latency", "100ms"]


@dataclass(frozen=True)
class Host:
    """One namespace on the bridge. `up`/`down` in bytes/s."""

    name: str
    ip: str
    up: int
    down: int

    @property
    def netns(self) -> str:
        return PREFIX + self.name

    @property
    def outer(self) -> str:
        return f"{PREFIX}{self.name}h"  # bridge end: its egress is the host's download

    @property
    def inner(self) -> str:
        return f"{PREFIX}{self.name}c"  # namespace end: its egress is the host's upload

    def argv(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]


def cleanup_leftovers() -> list[str]:
    """Delete every namespace and link whose name starts with PREFIX (after a crash: the
    processes an earlier run left inside those namespaces are killed by pid first); returns
    what it removed."""
    removed = []
    for line in _run("ip", "netns", "list").stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(PREFIX):
            for pid in _run("ip", "netns", "pids", name, check=False).stdout.split():
                _run("kill", "-9", pid, check=False)
                removed.append(f"pid {pid}")
            _run("ip", "netns", "delete", name, check=False)
            removed.append(name)
    for line in _run("ip", "-o", "link", "show").stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(PREFIX):
            _run("ip", "link", "delete", name, check=False)
            removed.append(name)
    return removed


class Network:
    """The bridge and its hosts; `close()` (or the context manager) removes all of them."""

    def __init__(self) -> None:
        self.hosts: dict[str, Host] = {}
        self._bridge = False

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> Network:
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        self._bridge = True
        _run("ip", "addr", "add", f"{BRIDGE_IP}/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        return self

    def add(self, name: str, octet: int, up: int, down: int) -> Host:
        """A namespace `name` at SUBNET.octet whose upload and download are shaped."""
        h = Host(name, f"{SUBNET}.{octet}", up, down)
        self.hosts[name] = h
        _run("ip", "netns", "add", h.netns)
        _run("ip", "link", "add", h.outer, "type", "veth", "peer", "name", h.inner)
        _run("ip", "link", "set", h.inner, "netns", h.netns)
        _run("ip", "link", "set", h.outer, "master", BRIDGE)
        _run("ip", "link", "set", h.outer, "up")
        ns = ["ip", "netns", "exec", h.netns]
        # lo: the product's web-seed gateway listens on a 127.128.0.0/9 address in the namespace
        _run(*ns, "ip", "link", "set", "lo", "up")
        _run(*ns, "ip", "addr", "add", f"{h.ip}/24", "dev", h.inner)
        _run(*ns, "ip", "link", "set", h.inner, "up")
        self.shape(h, up, down)
        return h

    def shape(self, h: Host, up: int, down: int) -> None:
        """(Re)set both shapers of `h` (UNSHAPED lifts one, e.g. while `lock` reads the origin)."""
        _run("tc", "qdisc", "replace", "dev", h.outer, "root", *tbf_args(down))
        _run("ip", "netns", "exec", h.netns, "tc", "qdisc", "replace", "dev", h.inner, "root",
             *tbf_args(up))

    def close(self) -> None:
        """Delete every namespace (and so its veth pair) and the bridge. A process still inside
        a namespace (its owner failed to stop it) is killed by pid first: deleting the name
        alone would leave it running, unreachable."""
        for h in self.hosts.values():
            for pid in _run("ip", "netns", "pids", h.netns, check=False).stdout.split():
                _run("kill", "-9", pid, check=False)
            _run("ip", "netns", "delete", h.netns, check=False)
            _run("ip", "link", "delete", h.outer, check=False)
        self.hosts.clear()
        if self._bridge:
            _run("ip", "link", "delete", BRIDGE, check=False)
            self._bridge = False
