"""One byte range of an http(s) file, read on the calling thread into a reused buffer.

The event loop's receive path (aiohttp: a new bytes object per socket read, another per body
chunk, the parser and a future per chunk, all holding the GIL) cost a direct read twice the
CPU of this one: a blocking `http.client` response read into a buffer that is reused, with
the GIL released while the kernel copies (bench/README, "range reads on threads"). On a
2-core node that shares its CPUs with libtorrent and the hashing, that CPU is the read's speed.

Only a plain GET of the file's configured URL is made here: that URL's own headers (its
credentials) go to that URL's origin and nowhere else. Anything but a `206` with the asked
range straight away, sent as it is (a redirect, a whole body, a chunked or compressed body,
userinfo in the URL, another scheme) raises `NotRanged` before a byte of the body is read: the
caller then reads through `Origin.read`, whose redirect policy decides where credentials go.
"""

from __future__ import annotations

import http.client
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import urlsplit

from reconciler import __version__
from reconciler.adapters.sources.base import OriginError, safe_url
from reconciler.adapters.sources.threaded import NotRanged, Reading, Stopped

BUFFER = 256 << 10  # bytes per `readinto`: what a kill can lose per stream, a GIL hand-off each
CONNECT_TIMEOUT = 30.0  # seconds, as the HTTP session's `connect`
FLUSH_SECONDS = 0.05  # a buffer not yet full goes to `into` after this long
READ_TIMEOUT = 120.0  # seconds without a byte, as the HTTP session's `sock_read`

KEEP_SECONDS = 4.0  # a connection idle longer is not used again (origins close idle ones)

_kept = threading.local()  # (origin, connection, since) a range thread keeps
_tls: ssl.SSLContext | None = None
_tls_lock = threading.Lock()


@dataclass(frozen=True)
class PlainGet:
    """A GET a thread may make by itself (a `RangeReader`): the file's configured URL and the
    headers configured for it (credentials for that URL's origin only)."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)

    def read_range(self, offset: int, length: int, size: int,
                   into: Callable[[memoryview], None], reading: Reading) -> None:
        get_range(self, offset, length, size, into, reading)


class StatusError(OriginError):
    """The origin answered the range with an error status (>= 400), before any of its body."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Sink(Exception):
    """`into` failed (the disk): raised as its own OSError, not as the origin's."""

    def __init__(self, error: OSError) -> None:
        self.error = error


def _tls_context() -> ssl.SSLContext:
    """The system's trust store, as the HTTP session verifies with (one per process)."""
    global _tls
    with _tls_lock:
        if _tls is None:
            _tls = ssl.create_default_context()
        return _tls


def _target(url: str) -> tuple[tuple[str, str, int | None], str]:
    """(scheme, host, port) of `url`, and what to ask for there."""
    u = urlsplit(url)
    if u.username is not None or u.password is not None or not u.hostname:
        raise NotRanged(f"{safe_url(url)}: credentials in the URL")
    if u.scheme not in ("http", "https"):
        raise NotRanged(f"{safe_url(url)}: not http(s)")
    return (u.scheme, u.hostname, u.port), (u.path or "/") + (f"?{u.query}" if u.query else "")


def _connection(key: tuple[str, str, int | None]) -> tuple[http.client.HTTPConnection, bool]:
    """The thread's kept connection to `key`'s origin (True: kept, the origin may have closed
    it meanwhile), or a new one. A thread keeps one connection, to the origin it read last:
    the ranges of a file go to one origin, and a TCP (and TLS) set-up per range cost a
    direct read a fifth of its speed with the node's 64 ranges at once."""
    kept = getattr(_kept, "conn", None)
    _kept.conn = None
    if kept is not None:
        k, conn, since = kept
        if k == key and time.monotonic() - since < KEEP_SECONDS and conn.sock is not None:
            return conn, True
        conn.close()
    scheme, host, port = key
    if scheme == "https":
        return http.client.HTTPSConnection(host, port, timeout=CONNECT_TIMEOUT,
                                           context=_tls_context()), False
    return http.client.HTTPConnection(host, port, timeout=CONNECT_TIMEOUT), False


def _keep(key: tuple[str, str, int | None], conn: http.client.HTTPConnection) -> None:
    _kept.conn = (key, conn, time.monotonic())


def get_range(get: PlainGet, offset: int, length: int, size: int,
              into: Callable[[memoryview], None], reading: Reading,
              buffer: int = BUFFER) -> None:
    """Read `length` bytes of `get.url` from `offset` (a file of `size` bytes), handing them to
    `into` in order, at most `buffer` at a time (the view is reused: `into` copies or writes
    what it keeps). Raises NotRanged (nothing of the body read), OriginError (the origin
    failed, or sent less), Stopped; an error of `into` (the disk's OSError) as it is."""
    if length <= 0:
        return
    key, target = _target(get.url)
    where = safe_url(get.url)
    end = offset + length - 1
    headers = {"User-Agent": f"syncbit/{__version__}", "Accept-Encoding": "identity",
               **get.headers, "Range": f"bytes={offset}-{end}"}
    for attempt in range(2):
        conn, kept = _connection(key)
        done = False
        try:
            try:
                if conn.sock is None:
                    conn.connect()
                with reading.holding(conn.sock):
                    conn.sock.settimeout(READ_TIMEOUT)
                    try:
                        conn.request("GET", target, headers=headers)
                        r = conn.getresponse()
                    except (http.client.RemoteDisconnected, ConnectionResetError,
                            BrokenPipeError):
                        if kept and not attempt:
                            continue  # the origin closed the kept connection: a new one
                        raise
                    _read_body(r, where, offset, length, size, into, reading, buffer)
                    r.close()  # read whole: the connection may carry the next range
                    done = not r.will_close
            except _Sink as e:
                raise e.error from None  # the disk's: not the origin's
            except (http.client.HTTPException, OSError) as e:
                if reading.stopped.is_set():
                    raise Stopped() from None
                raise OriginError(f"http source: {where}: {e.__class__.__name__}: {e}") from None
        finally:
            if done:
                _keep(key, conn)
            else:
                conn.close()
        return


def _read_body(r: http.client.HTTPResponse, where: str, offset: int, length: int, size: int,
               into: Callable[[memoryview], None], reading: Reading, buffer: int) -> None:
    end = offset + length - 1
    if r.status >= 400:
        raise StatusError(f"http source: {where}: {r.status} {r.reason}", r.status)
    if r.status != 206:
        raise NotRanged(f"{where}: answered {r.status} to a range")
    if r.chunked or r.length != length or r.getheader("Content-Encoding",
                                                      "identity").lower() != "identity":
        raise NotRanged(f"{where}: a range not sent as its {length} bytes as they are")
    expected = f"bytes {offset}-{end}/{size}"
    got = r.getheader("Content-Range", "")
    if got.strip() != expected:
        raise OriginError(f"http source: {where}: sent range {got!r} for {expected!r} "
                          "(did it change while locking?)")
    # The body is taken from the response's buffered reader one system call at a time
    # (`readinto1`: what the socket has), so that a slow connection still hands over what it
    # has every `FLUSH_SECONDS`, and `into` sees the origin's speed, instead of waiting
    # seconds for a whole buffer.
    body = r.fp
    view = memoryview(bytearray(min(buffer, length)))
    left = length
    while left:
        want = min(len(view), left)
        filled, began, ended = 0, time.monotonic(), False
        while filled < want and (not filled or time.monotonic() - began < FLUSH_SECONDS):
            if reading.stopped.is_set():
                raise Stopped()
            n = body.readinto1(view[filled:want])
            if not n:
                ended = True
                break
            filled += n
        if filled:  # what came is good: written, it is kept (libtorrent's check)
            try:
                into(view[:filled])
            except OSError as e:
                raise _Sink(e) from None
        left -= filled
        if ended:
            if reading.stopped.is_set():  # its socket was shut down under it
                raise Stopped()
            raise OriginError(f"http source: {where}: the origin sent {length - left} of "
                              f"{length} bytes from {offset}")
