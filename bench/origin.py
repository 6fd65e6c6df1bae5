"""The benchmark's origin: an HTTP file server shaped like an object store, run as its own
process inside the origin's network namespace:

    python -m bench.origin --root DIR --host IP --port P [--conn-rate R] [--latency-ms MS]

- Range (`bytes=a-b`, `a-`, `-n`) and HEAD with Content-Length and an ETag, as the product's
  http source and web-seed gateway need.
- `--conn-rate`: each response is paced to R bytes/s. HTTP/1.1 answers one request at a time per
  connection, so that is a per-connection cap, as S3, GCS and CDNs apply one; only many
  concurrent connections (aria2c -x16, the product's gateway) get a single client more.
- `--latency-ms`: every response's first byte (headers) waits that long (object-store first-byte
  latency), so a client making many small requests one after another pays it every time.
- The origin's total rate is NOT enforced here but by the tbf shaper on its link (bench/namespaces):
  the kernel is a fairer and cheaper bottleneck than an event loop.
- `--log FILE`: one JSON line per GET when its response ends (`t0`, `t1`: wall clock of the
  first and last body byte; `ip`: the client's address, i.e. the node's namespace; `path`;
  `first`, `last`: the range asked for; `sent`: body bytes actually written, less if the
  client hung up), and `{"reset": t}` at every counter reset, so `bench/origin_trace.py` can
  tell which bytes were sent more than once, to whom and when.
- `POST /_control` sets both knobs at run time (the benchmark lifts them while `lock` reads).
- `GET /_stats` returns {"bytes", "gets", "heads", "open", "by_top"} (body bytes written to
  sockets since the last `POST /_stats/reset`; "by_top" splits them by the path's first segment,
  one dataset each with `bench.swarm --datasets`), which the benchmark reads from the root
  namespace.

Why a separate process (not tests/origin_server.py in a thread): it must live in another network
namespace, and its event loop must not compete with the benchmark's polling for the GIL.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import time
from pathlib import Path

from aiohttp import web

from bench.bound import parse_size

CHUNK = 64 << 10


class Origin:
    def __init__(self, root: Path, conn_rate: int | None, latency: float,
                 log: Path | None = None) -> None:
        self.root = root.resolve()
        self.log = open(log, "a", buffering=1) if log else None  # noqa: SIM115 (process-long)
        self.conn_rate = conn_rate
        self.latency = latency
        self.bytes = self.gets = self.heads = self.open = 0
        self.by_top: dict[str, int] = {}
        # pacing grain: 1/8 s of the cap, so short ranges are paced too
        self.chunk = min(CHUNK, max(4096, conn_rate // 8)) if conn_rate else CHUNK

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/_stats", self.stats)
        app.router.add_post("/_stats/reset", self.reset)
        app.router.add_post("/_control", self.control)
        app.router.add_route("*", "/{path:.*}", self.serve)
        return app

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"bytes": self.bytes, "gets": self.gets, "heads": self.heads,
                                  "open": self.open, "by_top": self.by_top})

    async def reset(self, request: web.Request) -> web.Response:
        self.bytes = self.gets = self.heads = 0
        self.by_top = {}
        self._trace({"reset": time.time()})
        return web.json_response({"bytes": 0})

    async def control(self, request: web.Request) -> web.Response:
        """{"conn_rate": bytes/s or 0, "latency_ms": ms}: lifted while `lock` reads the dataset
        (not part of the measurement), restored before the clock starts."""
        doc = await request.json()
        self.conn_rate = int(doc.get("conn_rate") or 0) or None
        self.latency = float(doc.get("latency_ms") or 0) / 1000
        self.chunk = min(CHUNK, max(4096, self.conn_rate // 8)) if self.conn_rate else CHUNK
        return web.json_response({"conn_rate": self.conn_rate, "latency": self.latency})

    def _trace(self, doc: dict[str, object]) -> None:
        if self.log is not None:
            self.log.write(json.dumps(doc) + "\n")

    def _file(self, rel: str) -> Path:
        f = (self.root / rel).resolve()
        if not f.is_relative_to(self.root) or not f.is_file():
            raise web.HTTPNotFound()
        return f

    async def serve(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
        f = self._file(request.match_info["path"])
        st = f.stat()
        size = st.st_size
        etag = '"' + hashlib.sha256(f"{f}:{size}:{st.st_mtime_ns}".encode()).hexdigest()[:16] + '"'
        start, end, status = 0, size - 1, 200
        rng = request.headers.get("Range")
        if rng:
            start, end = _range(rng, size)
            status = 206
        headers = {"ETag": etag, "Accept-Ranges": "bytes"}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        if self.latency:
            await asyncio.sleep(self.latency)
        if request.method == "HEAD":
            self.heads += 1
            return web.Response(status=status, headers={**headers,
                                                        "Content-Length": str(end + 1 - start)})
        self.gets += 1
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = end + 1 - start
        await resp.prepare(request)
        self.open += 1
        rec: dict[str, object] = {"t0": time.time(), "ip": request.remote,
                                  "path": request.match_info["path"],
                                  "first": start, "last": end, "sent": 0}
        try:
            top = request.match_info["path"].split("/", 1)[0]
            await self._body(resp, f, start, end + 1, top, rec)
        finally:
            self.open -= 1
            rec["t1"] = time.time()
            self._trace(rec)
        return resp

    async def _body(self, resp: web.StreamResponse, f: Path, start: int, stop: int,
                    top: str, rec: dict[str, object]) -> None:
        """Write [start, stop) of `f`, paced to conn_rate from the first body byte."""
        t0, sent = time.monotonic(), 0
        fd = os.open(f, os.O_RDONLY)
        try:
            pos = start
            while pos < stop:
                chunk = os.pread(fd, min(self.chunk, stop - pos), pos)
                if not chunk:
                    break
                await resp.write(chunk)
                pos += len(chunk)
                sent += len(chunk)
                rec["sent"] = sent
                self.bytes += len(chunk)
                self.by_top[top] = self.by_top.get(top, 0) + len(chunk)
                if self.conn_rate:
                    ahead = sent / self.conn_rate - (time.monotonic() - t0)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
        finally:
            os.close(fd)


def _range(header: str, size: int) -> tuple[int, int]:
    """(first, last) byte of a single `bytes=` range; 416 if it cannot be served."""
    spec = header.strip().removeprefix("bytes=")
    a, sep, b = spec.partition("-")
    try:
        if not sep or "," in spec:
            raise ValueError(header)
        if a == "":
            first, last = max(0, size - int(b)), size - 1
        else:
            first, last = int(a), min(int(b), size - 1) if b else size - 1
    except ValueError:
        raise web.HTTPRequestRangeNotSatisfiable() from None
    if first > last or first >= size:
        raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
    return first, last


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--conn-rate", type=parse_size, default=None, help="bytes/s per connection")
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--log", type=Path, default=None, help="one JSON line per GET (see above)")
    args = ap.parse_args(argv)
    origin = Origin(args.root, args.conn_rate or None, args.latency_ms / 1000, args.log)
    web.run_app(origin.app(), host=args.host, port=args.port, access_log=None,
                print=None, shutdown_timeout=1.0)


if __name__ == "__main__":
    main()
