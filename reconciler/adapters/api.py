"""The node's HTTP API (DESIGN §6): `GET /status`, `GET /healthz`, `GET /metrics`, and for
peers `GET /v1/metadata/<dataset>/<key>` (the torrents of unlocked datasets, metadata.py).

It serves only the NodeStatus document the reconciler already publishes (the same document as
`statusFile`, and its Prometheus rendering as in `metricsFile`) and torrents, so nothing secret
can leak through it: credentials never enter either.

It faces the network, so it defends itself (issue 11, item 4): a stranger must not be able to
exhaust the process's file descriptors (the status file and the state repo need them) or its
log. Connections are accepted by `_Gate`, which closes at once, without a byte, those over a
per-address or total cap (the total derived from RLIMIT_NOFILE); a watchdog closes connections
that do not send a complete request head in time or whose request takes too long; `/v1/...`
answers inventory addresses only; refusals are logged as one summary line per interval.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import importlib.resources
import ipaddress
import resource
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Union, cast

import structlog
from aiohttp import web

from reconciler.adapters.cluster_view import CachedCluster
from reconciler.adapters.status_file import NodeMetrics, render_metrics
from reconciler.model.desired import DesiredState
from reconciler.core.hostport import parse_hostport
from reconciler.core.timefmt import rfc3339_to_epoch

log = structlog.get_logger("api")

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
NO_STATUS = "no pass has finished yet"
TORRENT_CONTENT_TYPE = "application/x-bittorrent"

HEADER_TIMEOUT = 10.0  # s from connect (or the previous response) to a complete request head
IDLE_TIMEOUT = 10.0  # s an idle keep-alive connection is kept (aiohttp's keepalive_timeout)
REQUEST_TIMEOUT = 30.0  # s from a complete request head to its response written
MAX_PER_ADDRESS = 16  # open connections from one address
MAX_CONNECTIONS = 512  # total open connections, at most; lower when RLIMIT_NOFILE is low
STRANGER_SHARE = 0.75  # strangers get this share of the total; the rest is kept for the
#                        inventory and the local host (probes), so a flood does not lock them out
REFUSED_LOG_EVERY = 10.0  # s between two summary lines about refused/closed connections
WATCHDOG_EVERY = 0.25  # s between two looks at the connections' deadlines
#: The addresses a local client connects from by default: the kernel picks them as the source
#: for any loopback destination, so on a loopback cluster (tests, the demo) they are how the
#: inventory's own 127.x nodes reach each other.
LOOPBACK_SOURCES = frozenset({"127.0.0.1", "::1"})

#: (dataset, key) -> (HTTP status, torrent bytes or a JSON document); see executor/unlocked.py.
MetadataProvider = Callable[[str, str], tuple[int, Union[bytes, dict]]]


def connection_cap(fd_limit: int | None = None) -> int:
    """The total connection cap: an eighth of the soft RLIMIT_NOFILE, at most MAX_CONNECTIONS,
    so a saturated API leaves most descriptors to the status file, the state repo, libtorrent
    and the gateway (status must never depend on a descriptor the attacker can exhaust)."""
    if fd_limit is None:
        fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if fd_limit < 0:  # RLIM_INFINITY
        return MAX_CONNECTIONS
    return max(4, min(MAX_CONNECTIONS, fd_limit // 8))


def inventory_hosts(endpoints: Iterable[str]) -> set[str]:
    """The IP addresses of `host:port` endpoints (Node documents' spec.api and spec.peer).
    Host names are skipped: the API compares the connection's address, it resolves nothing."""
    out: set[str] = set()
    for e in endpoints:
        try:
            out.add(_canonical_ip(parse_hostport(e)[0]))
        except ValueError:
            continue
    return out


def _canonical_ip(host: str) -> str:
    """`::ffff:10.0.0.1` (IPv4 on a dual-stack socket) -> `10.0.0.1`; ValueError for names."""
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def parse_listen(listen: str) -> tuple[str | None, int]:
    """`host:port`, `[v6addr]:port`, or `:port` (every interface) -> (host or None, port)."""
    host, port = parse_hostport(listen, allow_empty_host=True, what="api listen address")
    return (host or None), port


class ApiServer:
    """The node's HTTP API, an aiohttp server on `listen` ("host:port", "[::1]:7070" for IPv6).

    - `GET /status`: the NodeStatus JSON, the same document as `statusFile`; 503
      `{"error": "no pass has finished yet"}` until `get_status()` returns one.
    - `GET /metrics`: the Prometheus text exposition of that document (the same data as
      `metricsFile`); 503 until there is a status.
    - `GET /healthz`: *liveness* of the reconciler process, for systemd watchdogs and Kubernetes
      liveness probes. 200 `{"status": "ok", ...}` while the status is fresh: its
      `lastPass.finishedAt` (or `startedAt` while a pass runs) is younger than `stale_after`
      seconds, or, while a pass runs, the document of that same pass was seen to change within
      `stale_after` (a pass downloading for hours is alive as long as it publishes progress).
      503 `{"status": ..., "reason": ...}` otherwise. It says nothing about the data: a node
      whose datasets are still Fetching, or whose newest revision was rejected, is alive and
      answers 200. Readiness of the data is the
      `Ready` condition in `/status` (and `syncbit_ready` in `/metrics`); use that, or
      `syncbit-reconcile wait`, for readiness gates, never /healthz.

    - `GET /v1/metadata/<dataset>/<key>`: for the other target nodes of a dataset without
      `spec.lock`: 200 and the torrent when this node has it; 202 `{"state": "building" |
      "waiting"}` while it builds it or waits for it; 404 `{"state": "unknown" | "failed"}`.

    HEAD is answered like GET; other methods get 405, unknown paths 404. No access log is
    written; one structlog line (logger "api") reports the URL on start.

    Defences (see the module docstring): `/v1/...` answers `admits()` addresses only (403
    otherwise; `inventory`, refreshed with `set_inventory`); the other endpoints are open. A
    connection must send a complete request head within `header_timeout` of connecting or of
    its previous response, finish each request within `request_timeout`, and idle keep-alive
    connections close after `idle_timeout`. Over `max_per_address` connections from one
    address, or `max_connections` in all (default connection_cap(); strangers get only
    STRANGER_SHARE of it), a new connection is aborted at once. Refusals and timeouts are
    logged as one summary line per `log_every` seconds.
    """

    def __init__(self, listen: str, get_status: Callable[[], dict | None], *,
                 stale_after: float = 300.0, metadata: MetadataProvider | None = None,
                 inventory: Iterable[str] | None = None, metrics: NodeMetrics | None = None,
                 desired: DesiredState | None = None,
                 header_timeout: float = HEADER_TIMEOUT, idle_timeout: float = IDLE_TIMEOUT,
                 request_timeout: float = REQUEST_TIMEOUT,
                 max_connections: int | None = None, max_per_address: int = MAX_PER_ADDRESS,
                 log_every: float = REFUSED_LOG_EVERY) -> None:
        self.host, self._listen_port = parse_listen(listen)
        self.port = self._listen_port  # the bound port once started (port 0 picks one)
        self._get_status = get_status
        self._metadata = metadata
        self._node_metrics = metrics
        self._desired = desired
        self._cluster = CachedCluster()
        self.stale_after = stale_after
        self._runner: web.AppRunner | None = None
        self._last_doc: dict | None = None  # the running pass's document seen last
        self._last_change: float | None = None  # monotonic time that pass was seen to progress
        self._inventory: frozenset[str] = frozenset()
        self._loopback_inventory = True  # no inventory given: loopback callers only
        if inventory is not None:
            self.set_inventory(inventory)
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self.max_connections = connection_cap() if max_connections is None else max_connections
        self.max_per_address = max_per_address
        self.log_every = log_every
        self._conns: dict[asyncio.Transport, _Conn] = {}
        self._per_ip: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()  # reason -> count since the last summary line
        self._refused_total: Counter[str] = Counter()  # reason -> count since start
        self._logged_at: float | None = None  # monotonic time of the last summary line
        self._site: _GatedSite | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._prev_exc_handler: Any = None

    @property
    def url(self) -> str:
        host = self.host or "0.0.0.0"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def connections(self) -> int:
        """Connections open now (refused ones never count)."""
        return sum(1 for t in self._conns if not t.is_closing())

    @property
    def refused(self) -> dict[str, int]:
        """Connections and requests turned away since start, by reason."""
        return dict(self._refused_total)

    def set_inventory(self, addresses: Iterable[str]) -> None:
        """The addresses allowed to call `/v1/...`: the IPs of the Node documents' spec.api and
        spec.peer hosts (inventory_hosts); the runner refreshes them every pass."""
        ips = set()
        for a in addresses:
            try:
                ips.add(_canonical_ip(a))
            except ValueError:
                continue
        self._inventory = frozenset(ips)
        self._loopback_inventory = any(ipaddress.ip_address(a).is_loopback for a in ips)

    def set_desired(self, state: DesiredState) -> None:
        """The revision this node converges to: its inventory is whom `/cluster` asks."""
        self._desired = state

    def admits(self, remote: str | None) -> bool:
        """May `remote` call the peer endpoints? Inventory addresses, and the default loopback
        sources when the inventory itself is on loopback (one machine: the nodes' own requests
        come from 127.0.0.1 unless they bind a source address)."""
        if remote is None:
            return False
        try:
            ip = _canonical_ip(remote)
        except ValueError:
            return False
        return ip in self._inventory or (self._loopback_inventory and ip in LOOPBACK_SOURCES)

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError(f"API server already listening on {self.url}")
        app = web.Application(middlewares=[self._guard, self._errors_as_json])
        app.router.add_get("/status", self._status)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/cluster", self._cluster_view)
        app.router.add_get("/", self._page)
        app.router.add_get("/v1/metadata/{dataset}/{key}", self._torrent)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0,
                               keepalive_timeout=self.idle_timeout)
        await runner.setup()
        try:
            site = _GatedSite(runner, self.host, self._listen_port, self._accept)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner, self._site = runner, site
        self.port = runner.addresses[0][1]
        self._watchdog = asyncio.create_task(self._watch(), name="api-watchdog")
        loop = asyncio.get_running_loop()
        self._prev_exc_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_exception)
        log.info("api listening", url=self.url, maxConnections=self.max_connections,
                 maxPerAddress=self.max_per_address)

    async def stop(self) -> None:
        runner, self._runner, self._site = self._runner, None, None
        task, self._watchdog = self._watchdog, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        loop = asyncio.get_running_loop()
        if loop.get_exception_handler() == self._loop_exception:
            loop.set_exception_handler(self._prev_exc_handler)
        if runner is not None:
            await runner.cleanup()
        for t in list(self._conns):
            t.abort()
        self._conns.clear()
        self._per_ip.clear()
        self._summarize(force=True)

    # -- connection guard ---------------------------------------------------------------------

    def _accept(self, transport: asyncio.Transport) -> asyncio.BaseProtocol | None:
        """A new connection: the aiohttp protocol to hand it to, or None to close it now."""
        self._purge()
        ip = _remote_ip(transport)
        privileged = ip is not None and (ip in self._inventory or ip in LOOPBACK_SOURCES)
        total = len(self._conns)
        if ip is None:
            reason = "no peer address"
        elif self._per_ip[ip] >= self.max_per_address:
            reason = "per-address cap"
        elif total >= self.max_connections:
            reason = "total cap"
        elif not privileged and total >= int(self.max_connections * STRANGER_SHARE):
            reason = "total cap"
        else:
            reason = None
        if reason is not None or self._runner is None or self._runner.server is None:
            self._refuse(reason or "stopping")
            return None
        assert ip is not None
        self._conns[transport] = _Conn(ip, time.monotonic() + self.header_timeout)
        self._per_ip[ip] += 1
        return self._runner.server()

    def _purge(self) -> None:
        for t in [t for t in self._conns if t.is_closing()]:
            self._forget(t)

    def _forget(self, t: asyncio.Transport) -> None:
        c = self._conns.pop(t, None)
        if c is not None:
            self._per_ip[c.ip] -= 1
            if self._per_ip[c.ip] <= 0:
                del self._per_ip[c.ip]

    async def _watch(self) -> None:
        """Close connections past their deadline; forget closed ones; log the summary."""
        while True:
            await asyncio.sleep(WATCHDOG_EVERY)
            now = time.monotonic()
            for t, c in list(self._conns.items()):
                if t.is_closing():
                    self._forget(t)
                elif now >= c.deadline:
                    self._refuse("request timeout" if c.in_request else "header timeout")
                    t.abort()
                    self._forget(t)
            self._summarize()

    def _refuse(self, reason: str) -> None:
        self._refused[reason] += 1
        self._refused_total[reason] += 1
        self._summarize()

    def _summarize(self, force: bool = False) -> None:
        """At most one log line per `log_every` seconds, however many were refused."""
        now = time.monotonic()
        if not self._refused or (not force and self._logged_at is not None
                                 and now - self._logged_at < self.log_every):
            return
        log.warning("api connections refused or closed", counts=dict(self._refused),
                    total=sum(self._refused.values()), open=len(self._conns),
                    seconds=None if self._logged_at is None else round(now - self._logged_at, 1))
        self._refused.clear()
        self._logged_at = now

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """asyncio reports accept() failures (EMFILE...) on our socket once per retry: count them
        into the summary line instead of one log line each; anything else goes on as before."""
        sock = context.get("socket")
        ours = self._site.filenos() if self._site is not None else set()
        if sock is not None and "accept" in str(context.get("message", "")):
            try:
                if sock.fileno() in ours:
                    self._refuse(f"accept error: {type(context.get('exception')).__name__}")
                    return
            except OSError:
                pass
        if self._prev_exc_handler is not None:
            self._prev_exc_handler(loop, context)
        else:
            loop.default_exception_handler(context)

    @web.middleware
    async def _guard(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        """Peer endpoints for inventory addresses only; the request's time limit; the response
        written here, so the connection's next head gets a fresh header timeout."""
        conn = (self._conns.get(request.transport)
                if request.transport is not None else None)
        if conn is not None:
            conn.in_request = True
            conn.deadline = time.monotonic() + self.request_timeout
        resource_ = request.match_info.route.resource
        canonical = resource_.canonical if resource_ is not None else request.path
        if canonical.startswith("/v1/") or request.path.startswith("/v1/"):
            if not self.admits(request.remote):
                self._refuse("not inventory (403)")
                resp: web.StreamResponse = _json(
                    {"error": "forbidden: peer endpoints answer inventory addresses only"}, 403)
            else:
                resp = await handler(request)
        else:
            resp = await handler(request)
        await resp.prepare(request)
        await resp.write_eof()
        if conn is not None:
            conn.in_request = False
            conn.deadline = time.monotonic() + self.header_timeout
        return resp

    # -- handlers -----------------------------------------------------------------------------

    def _current(self) -> dict | None:
        """get_status(), noting when a running pass was last seen to publish progress."""
        doc = self._get_status()
        lp = doc.get("lastPass") if isinstance(doc, dict) else None
        if not isinstance(lp, dict) or lp.get("finishedAt"):
            self._last_doc = None  # no pass running: only lastPass.finishedAt counts
            self._last_change = None
            return doc
        same_pass = (self._last_doc is not None
                     and self._last_doc["lastPass"].get("startedAt") == lp.get("startedAt"))
        if not same_pass:
            self._last_change = None  # a pass seen for the first time: judged by startedAt
        elif doc != self._last_doc:
            self._last_change = time.monotonic()
        if not same_pass or doc != self._last_doc:
            self._last_doc = copy.deepcopy(doc)  # the provider may update one dict in place
        return doc

    async def _status(self, request: web.Request) -> web.Response:
        doc = self._current()
        if doc is None:
            return _json({"error": NO_STATUS}, 503)
        return _json(doc, 200)

    async def _metrics(self, request: web.Request) -> web.Response:
        doc = self._current()
        if doc is None:
            return _json({"error": NO_STATUS}, 503)
        try:
            body = (self._node_metrics.render(doc) if self._node_metrics is not None
                    else render_metrics(doc))
        except Exception as e:  # a malformed document: say so instead of a bare 500
            log.error("cannot render metrics", error=f"{type(e).__name__}: {e}")
            return _json({"error": f"cannot render metrics: {type(e).__name__}"}, 500)
        resp = web.Response(body=body, status=200)
        resp.headers["Content-Type"] = METRICS_CONTENT_TYPE
        resp.headers["Cache-Control"] = "no-store"
        return resp

    async def _cluster_view(self, request: web.Request) -> web.Response:
        doc = self._current()
        state = self._desired
        if state is None:
            return _json({"error": NO_STATUS if doc is None else "no good revision yet",
                          "node": doc.get("node") if doc else None}, 503)
        view = await self._cluster.get(state, doc)
        return _json({"node": doc.get("node") if doc else None,
                      "rejected": doc.get("rejected") if doc else None, **view}, 200)

    async def _page(self, request: web.Request) -> web.Response:
        html, csp = _page()
        resp = web.Response(body=html, status=200, content_type="text/html", charset="utf-8")
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["Content-Security-Policy"] = csp
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["X-Frame-Options"] = "DENY"
        return resp

    async def _torrent(self, request: web.Request) -> web.Response:
        if self._metadata is None:
            return _json({"state": "unknown"}, 404)
        status, body = self._metadata(request.match_info["dataset"], request.match_info["key"])
        if isinstance(body, dict):
            return _json(body, status)
        resp = web.Response(body=body, status=status)
        resp.headers["Content-Type"] = TORRENT_CONTENT_TYPE
        resp.headers["Cache-Control"] = "no-store"
        return resp

    async def _healthz(self, request: web.Request) -> web.Response:
        doc = self._current()
        if doc is None:
            return _json({"status": "starting", "reason": NO_STATUS}, 503)
        lp = doc.get("lastPass")
        lp = lp if isinstance(lp, dict) else {}
        running = not lp.get("finishedAt")
        field = "startedAt" if running else "finishedAt"
        at = rfc3339_to_epoch(lp.get(field))
        body: dict[str, object] = {"node": doc.get("node"), "passRunning": running,
                                   "lastPass": lp}
        if at is None:
            return _json({"status": "stale", **body,
                          "reason": f"lastPass.{field} is missing or not RFC 3339"}, 503)
        age = max(0.0, time.time() - at)
        body["ageSeconds"] = round(age, 3)
        if age < self.stale_after:
            return _json({"status": "ok", **body}, 200)
        since_change = (None if self._last_change is None
                        else time.monotonic() - self._last_change)
        if since_change is not None and since_change < self.stale_after:
            return _json({"status": "ok", **body, "progressSecondsAgo": round(since_change, 3)},
                         200)
        reason = (f"the running pass started {age:.0f}s ago and published no progress in the "
                  f"last {self.stale_after:g}s" if running else
                  f"the last pass finished {age:.0f}s ago (stale after {self.stale_after:g}s)")
        return _json({"status": "stale", **body, "reason": reason}, 503)

    @web.middleware
    async def _errors_as_json(self, request: web.Request,
                              handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                              ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            resp = _json({"error": e.reason}, e.status)
            if "Allow" in e.headers:
                resp.headers["Allow"] = e.headers["Allow"]
            return resp


@dataclass
class _Conn:
    ip: str
    deadline: float  # monotonic; the watchdog closes the connection after it
    in_request: bool = False


def _remote_ip(transport: asyncio.BaseTransport) -> str | None:
    peer = transport.get_extra_info("peername")
    try:
        return _canonical_ip(str(peer[0]))
    except (TypeError, IndexError, ValueError):
        return None


class _Gate(asyncio.Protocol):
    """The first protocol of every accepted connection: asks ApiServer._accept, then hands the
    transport to aiohttp's protocol, or aborts it (no read, no write, no log line of its own)."""

    def __init__(self, accept: Callable[[asyncio.Transport], asyncio.BaseProtocol | None]
                 ) -> None:
        self._accept = accept

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # a TCP server's: a full Transport
        inner = self._accept(transport)
        if inner is None:
            transport.abort()
            return
        transport.set_protocol(inner)
        inner.connection_made(transport)


class _GatedSite(web.BaseSite):
    """aiohttp's TCPSite, with `_Gate` in front of aiohttp's protocol."""

    def __init__(self, runner: web.AppRunner, host: str | None, port: int,
                 accept: Callable[[asyncio.Transport], asyncio.BaseProtocol | None]) -> None:
        super().__init__(runner)
        self._host, self._port, self._accept = host, port, accept

    @property
    def name(self) -> str:
        host = self._host or "0.0.0.0"
        return f"http://{host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Gate(self._accept), self._host,
                                                self._port, backlog=self._backlog,
                                                reuse_address=True)

    def filenos(self) -> set[int]:
        server = cast("asyncio.Server | None", self._server)
        return {s.fileno() for s in server.sockets} if server is not None else set()


_PAGE: tuple[bytes, str] | None = None


def _page() -> tuple[bytes, str]:
    """web/index.html (package data) and its Content-Security-Policy: nothing may load from
    elsewhere, only this page's own inline script (by its hash) runs, it may call this API."""
    global _PAGE
    if _PAGE is None:
        html = importlib.resources.files("reconciler.adapters.web").joinpath(
            "index.html").read_bytes()
        text = html.decode()
        script = text.split("<script>", 1)[1].split("</script>", 1)[0]
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        csp = (f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; "
               "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
               "frame-ancestors 'none'")
        _PAGE = (html, csp)
    return _PAGE


def _json(doc: dict, status: int) -> web.Response:
    resp = web.json_response(doc, status=status)
    resp.headers["Cache-Control"] = "no-store"
    return resp
