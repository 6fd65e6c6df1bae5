"""The API's defences (issue 11, item 4): slowloris, connection caps, the inventory-only
`/v1/...`, bounded logging. A real ApiServer and real client sockets bound to chosen 127.x
source addresses; every wait is bounded by a deadline, every socket closed by the test."""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket
import time
from contextlib import suppress

import aiohttp

from reconciler.app import log as logging_setup
from reconciler.adapters.api import ApiServer, connection_cap, inventory_hosts
from reconciler.adapters.status_file import NodeReport, now_rfc3339, render_status

TIMEOUT = aiohttp.ClientTimeout(total=10)
HEAD = b"GET /status HTTP/1.1\r\nHost: node\r\nX-Slow: "  # a request head, never finished


def status_doc() -> dict:
    now = now_rfc3339()
    return render_status(NodeReport(node="gpu-01", observed_revision="a" * 40,
                                    last_applied_revision="a" * 40, started_at=now,
                                    finished_at=now, result="Converged", datasets={}))


async def http_get(url: str, source: str = "127.0.0.1") -> tuple[int, bytes]:
    """GET from a chosen source address (any 127.x works on Linux)."""
    conn = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    async with aiohttp.ClientSession(timeout=TIMEOUT, connector=conn) as s:
        async with s.get(url) as r:
            return r.status, await r.read()


async def open_slow(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    w.write(HEAD[:5])
    return r, w


async def closed_by_server(r: asyncio.StreamReader, timeout: float) -> bool:
    """True once the server closed the connection (EOF or reset) within `timeout`."""
    try:
        return await asyncio.wait_for(r.read(1), timeout) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except asyncio.TimeoutError:
        return False


def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for w in writers:
        with suppress(Exception):
            w.transport.abort()


def test_connection_cap_is_far_below_the_fd_limit() -> None:
    assert connection_cap(1024) == 128
    assert connection_cap(20000) == 512
    assert connection_cap(16) == 4
    assert connection_cap(-1) == 512  # RLIM_INFINITY
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert connection_cap() <= max(4, soft // 8)


def test_inventory_hosts_takes_the_ips_of_api_and_peer_endpoints() -> None:
    assert inventory_hosts(["10.0.0.1:7070", "[fd00::2]:6881", "node-3.lan:7070", "bad"]) == {
        "10.0.0.1", "fd00::2"}


async def test_slowloris_is_closed_capped_and_healthz_still_answers(
        api_servers, capsys) -> None:
    logging_setup.configure(json=True)
    srv: ApiServer = await api_servers(lambda: status_doc(), header_timeout=1.5,
                                       max_per_address=4, max_connections=8, log_every=60.0)
    writers: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []
    try:
        # 5 sources x 4 trickling connections: more than the per-address and total caps.
        for src in ("127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7"):
            for _ in range(4):
                r, w = await open_slow(srv.port, src)
                readers.append(r)
                writers.append(w)
        await asyncio.sleep(0.2)
        assert srv.connections <= 8
        # Strangers get at most 3/4 of the total: /healthz from the local host still answers,
        # as does /status from a fresh stranger address once the trickles are gone (below).
        assert (await http_get(srv.url + "/healthz"))[0] == 200

        # Trickle one byte every 0.2 s; the server closes every one of them within bounds.
        deadline = time.monotonic() + 10.0
        open_ = set(range(len(writers)))
        sent = 5
        while open_ and time.monotonic() < deadline:
            for i in list(open_):
                if writers[i].transport.is_closing() or readers[i].at_eof():
                    open_.discard(i)
                    continue
                with suppress(ConnectionError, OSError):
                    writers[i].write(HEAD[sent:sent + 1] or b"x")
            sent += 1
            assert srv.connections <= 8
            for i in list(open_):
                if await closed_by_server(readers[i], 0.01):
                    open_.discard(i)
            await asyncio.sleep(0.2)
        assert not open_, f"{len(open_)} slow connections still open after 10 s"
        assert srv.connections == 0
        refused = srv.refused
        assert refused.get("header timeout", 0) >= 1, refused
        assert refused.get("per-address cap", 0) + refused.get("total cap", 0) >= 12, refused
        assert (await http_get(srv.url + "/status", "127.0.0.8"))[0] == 200
    finally:
        close_all(writers)
    # The log: the start line and at most one summary line per log_every (here: none yet),
    # however many connections were refused.
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(lines) <= 2, lines


async def test_a_finished_request_does_not_extend_a_trickled_next_one(api_servers) -> None:
    srv: ApiServer = await api_servers(lambda: status_doc(), header_timeout=1.0,
                                       idle_timeout=30.0)
    r, w = await asyncio.open_connection("127.0.0.1", srv.port, local_addr=("127.0.0.9", 0))
    try:
        w.write(b"GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n")
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        await asyncio.wait_for(r.readexactly(length), 5)
        w.write(HEAD)  # a second head, never finished: closed by the header timeout
        deadline = time.monotonic() + 8.0
        closed = False
        while not closed and time.monotonic() < deadline:
            with suppress(ConnectionError, OSError):
                w.write(b"x")
            closed = await closed_by_server(r, 0.3)
        assert closed and srv.refused.get("header timeout") == 1, srv.refused
    finally:
        w.transport.abort()


async def test_peer_endpoints_answer_inventory_addresses_only(api_servers) -> None:
    srv: ApiServer = await api_servers(lambda: status_doc(), inventory={"127.0.0.2"},
                                       metadata=lambda d, k: (404, {"state": "unknown"}))
    path = "/v1/metadata/weights/" + "0" * 32
    status, body = await http_get(srv.url + path, "127.0.0.3")
    assert status == 403 and "inventory" in json.loads(body)["error"]
    status, body = await http_get(srv.url + path, "127.0.0.2")
    assert status == 404 and json.loads(body) == {"state": "unknown"}
    for p in ("/status", "/healthz", "/metrics"):  # open to everyone, as before
        assert (await http_get(srv.url + p, "127.0.0.3"))[0] == 200, p
    # The runner refreshes the inventory every pass.
    srv.set_inventory({"127.0.0.3"})
    assert (await http_get(srv.url + path, "127.0.0.3"))[0] == 404
    assert (await http_get(srv.url + path, "127.0.0.2"))[0] == 403
    # A non-loopback inventory does not admit the local host either.
    srv.set_inventory({"10.9.8.7"})
    assert (await http_get(srv.url + path, "127.0.0.1"))[0] == 403
    assert srv.refused.get("not inventory (403)") == 3


async def test_a_slow_reader_is_closed_by_the_request_timeout(api_servers) -> None:
    big = b"\0" * (64 << 20)  # far more than the socket buffers hold
    srv: ApiServer = await api_servers(lambda: status_doc(), request_timeout=1.0,
                                       metadata=lambda d, k: (200, big))
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.sock_connect(s, ("127.0.0.1", srv.port)), 5)
        await loop.sock_sendall(s, b"GET /v1/metadata/d/k HTTP/1.1\r\nHost: node\r\n\r\n")
        deadline = time.monotonic() + 10.0
        while srv.refused.get("request timeout", 0) == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # never read: the response cannot be written
        assert srv.refused.get("request timeout") == 1, srv.refused
    finally:
        s.close()


async def test_one_summary_line_per_interval(api_servers, capsys, caplog) -> None:
    logging_setup.configure(json=True)
    caplog.set_level(logging.DEBUG)
    srv: ApiServer = await api_servers(lambda: status_doc(), max_per_address=1, log_every=3600)

    def clients() -> None:  # blocking sockets, in a thread: the server runs on this loop
        keep = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        try:
            for _ in range(50):  # each refused at once
                with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as c:
                    with suppress(ConnectionError):
                        assert c.recv(1) == b""
        finally:
            keep.close()

    await asyncio.wait_for(asyncio.to_thread(clients), 30)
    await srv.stop()
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.strip()]
    summaries = [e for e in lines if e["event"] == "api connections refused or closed"]
    # One right away (the first refusal), one on stop with the rest: 2 lines for 50 refusals.
    assert len(summaries) == 2, lines
    assert sum(e["total"] for e in summaries) == 50
    assert summaries[0]["counts"] == {"per-address cap": 1}
