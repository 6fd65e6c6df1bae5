"""A real HTTP origin for tests: serves a directory with Range support and counts bytes sent.

Runs aiohttp on its own event loop in a thread, so reconciler subprocesses can reach it while
the test body stays synchronous. Optional `token` demands `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from aiohttp import web

from threaded_server import ThreadedServer, write_body


class OriginServer(ThreadedServer):
    def __init__(self, root: Path, host: str = "127.0.0.1", token: str | None = None,
                 rate: int | None = None, conn_rate: int | None = None,
                 latency: float = 0.0) -> None:
        super().__init__()
        self.root = root
        self.rate = rate  # bytes/s for the whole server, None = unthrottled
        self.conn_rate = conn_rate  # bytes/s for each response, like an object store's cap
        self.latency = latency  # seconds before each response, like a first-byte latency
        self.active = 0  # GETs being answered now...
        self.max_active = 0  # ...and the most at once
        self.host = host
        self.token = token
        self.port = 0
        self.bytes_sent = 0
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, range)
        self.hang = False  # GETs answer headers and a first chunk, then hang (a stuck origin)
        self._etags: dict[tuple[str, int, int], str] = {}

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"



    async def _start(self) -> None:
        self._throttle = asyncio.Lock()  # one chunk at a time: `rate` bounds the whole server
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path, request.headers.get("Range")))
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            raise web.HTTPUnauthorized()
        f = (self.root / request.match_info["path"]).resolve()
        if not f.is_relative_to(self.root.resolve()) or not f.is_file():
            raise web.HTTPNotFound()
        data, etag = self._content(f)
        start, end, status = 0, len(data) - 1, 200
        rng = request.headers.get("Range")
        if rng:
            a, _, b = rng.removeprefix("bytes=").partition("-")
            start, end, status = int(a), min(int(b), len(data) - 1) if b else len(data) - 1, 206
        body = data[start:end + 1]
        headers = {"ETag": etag, "Accept-Ranges": "bytes"}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        if self.latency:
            await asyncio.sleep(self.latency)
        if request.method == "HEAD":
            return web.Response(status=status, headers={**headers, "Content-Length": str(len(body))})
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = len(body)
        await resp.prepare(request)
        if self.hang:
            await resp.write(body[:1024])
            self._count(min(1024, len(body)))
            await asyncio.sleep(600)  # bounded; the test stops the server long before
            return resp
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.conn_rate:
                await write_body(resp, body, self.conn_rate, asyncio.Lock(), self._count)
            else:
                await write_body(resp, body, self.rate, self._throttle, self._count)
        except ConnectionResetError:
            pass  # the client hung up (aria2c and the gateway do when they have enough)
        finally:
            self.active -= 1
        return resp

    def _content(self, f: Path) -> tuple[bytes, str]:
        """The file's bytes, read on every request (a test may change them), and its ETag."""
        data = f.read_bytes()
        st = f.stat()
        key = (str(f), st.st_mtime_ns, st.st_size)
        etag = self._etags.get(key)
        if etag is None:
            etag = self._etags[key] = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        return data, etag

    def _count(self, n: int) -> None:
        self.bytes_sent += n
