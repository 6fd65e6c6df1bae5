"""systemd's sd_notify protocol: one datagram to $NOTIFY_SOCKET.

Hand-written (12 lines) rather than a dependency: the PyPI `sdnotify` package is unmaintained
since 2017 and does not handle abstract socket names; the protocol is a single sendto.
"""

from __future__ import annotations

import os
import socket


def notify(*fields: str) -> bool:
    """Send e.g. notify("READY=1", "STATUS=converged"); False when not run by systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]  # abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.sendto("\n".join(fields).encode(), addr)
        except OSError:
            return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), None if not asked for."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6
