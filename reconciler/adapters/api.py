"""The node's HTTP API (DESIGN §6): `GET /status`, `GET /healthz`, `GET /metrics`, and for
peers `GET /v1/metadata/<dataset>/<key>` (the torrents of unlocked datasets, metadata.py).

It serves only the NodeStatus document the reconciler already publishes (the same document as
`statusFile`, and its Prometheus rendering as in `metricsFile`) and torrents, so nothing secret
can leak through it: credentials never enter either.
"""

from __future__ import annotations

import copy
import time
from typing import Awaitable, Callable, Union

import structlog
from aiohttp import web

from reconciler.adapters.status_file import render_metrics
from reconciler.core.hostport import parse_hostport
from reconciler.core.timefmt import rfc3339_to_epoch

log = structlog.get_logger("api")

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
NO_STATUS = "no pass has finished yet"
TORRENT_CONTENT_TYPE = "application/x-bittorrent"

#: (dataset, key) -> (HTTP status, torrent bytes or a JSON document); see executor/unlocked.py.
MetadataProvider = Callable[[str, str], tuple[int, Union[bytes, dict]]]


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
    """

    def __init__(self, listen: str, get_status: Callable[[], dict | None], *,
                 stale_after: float = 300.0, metadata: MetadataProvider | None = None) -> None:
        self.host, self._listen_port = parse_listen(listen)
        self.port = self._listen_port  # the bound port once started (port 0 picks one)
        self._get_status = get_status
        self._metadata = metadata
        self.stale_after = stale_after
        self._runner: web.AppRunner | None = None
        self._last_doc: dict | None = None  # the running pass's document seen last
        self._last_change: float | None = None  # monotonic time that pass was seen to progress

    @property
    def url(self) -> str:
        host = self.host or "0.0.0.0"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError(f"API server already listening on {self.url}")
        app = web.Application(middlewares=[self._errors_as_json])
        app.router.add_get("/status", self._status)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/v1/metadata/{dataset}/{key}", self._torrent)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._listen_port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        log.info("api listening", url=self.url)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

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
            body = render_metrics(doc)
        except Exception as e:  # a malformed document: say so instead of a bare 500
            log.error("cannot render metrics", error=f"{type(e).__name__}: {e}")
            return _json({"error": f"cannot render metrics: {type(e).__name__}"}, 500)
        resp = web.Response(body=body, status=200)
        resp.headers["Content-Type"] = METRICS_CONTENT_TYPE
        resp.headers["Cache-Control"] = "no-store"
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


def _json(doc: dict, status: int) -> web.Response:
    resp = web.json_response(doc, status=status)
    resp.headers["Cache-Control"] = "no-store"
    return resp
