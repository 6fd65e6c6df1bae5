"""`http` sources: `baseUrl` + relative `files`, or a list of `urls`.

Header values may reference `${VAR}` from the environment; they are expanded per request and
never leave this module (not in the lock, status, logs or API). Every configured header is a
credential: redirects are followed by `redirects.request`, which sends them only to the origin
(scheme, host, port) of the URL they were configured for.
"""

from __future__ import annotations

import os
from typing import AsyncIterator, Mapping
from urllib.parse import quote, urlsplit, unquote

import aiohttp
from yarl import URL

from reconciler.core.envrefs import UnsetVariable, expand_env_refs
from reconciler.model.desired import HttpSource
from reconciler.adapters.sources.base import (CHUNK, Origin, OriginError, OriginFile,
                                              range_header, safe_url)
from reconciler.adapters.sources.blocking_get import PlainGet
from reconciler.adapters.sources.redirects import request

def expand_env(value: str, env: Mapping[str, str]) -> str:
    """`${NAME}` from `env`, `$$` is a literal dollar; a missing variable is an error."""
    try:
        return expand_env_refs(value, env)
    except UnsetVariable as e:
        raise OriginError(f"environment variable {e.name} is not set (used in an http header)") from None
    except ValueError as e:  # validation refuses bad syntax, so only a hand-made source gets here
        raise OriginError(f"http header: {e}") from None


class HttpOrigin(Origin):
    kind = "http"

    def __init__(self, source: HttpSource, http: aiohttp.ClientSession,
                 env: Mapping[str, str] | None = None) -> None:
        self.source = source
        self.http = http
        self.env = os.environ if env is None else env
        self.urls: dict[str, str]
        if source.urls:
            self.urls = {}
            for u in source.urls:
                name = unquote(urlsplit(u).path.rstrip("/").rsplit("/", 1)[-1])
                if name in self.urls:  # one would silently hide the other
                    raise OriginError(f"http source: {safe_url(self.urls[name])} and {safe_url(u)} "
                                      f"both name the file {name}")
                self.urls[name] = u
        else:
            base = (source.base_url or "").rstrip("/") + "/"
            self.urls = {f: base + quote(f) for f in source.files}

    def _headers(self) -> dict[str, str]:
        return {k: expand_env(v, self.env) for k, v in self.source.headers.items()}

    async def _request(self, method: str, url: str, headers: dict[str, str]) -> aiohttp.ClientResponse:
        """`method url`, redirects followed with the configured headers kept to `url`'s origin."""
        return await request(self.http, method, URL(url), headers, self.source.headers,
                             "http source")

    def _url(self, path: str) -> str:
        try:
            return self.urls[path]
        except KeyError:
            raise OriginError(f"http source: no file {path}") from None

    async def list_files(self) -> list[OriginFile]:
        out = []
        for path in sorted(self.urls):
            url = self._url(path)
            try:
                async with await self._request("HEAD", url, self._headers()) as r:
                    _check(r, path)
                    size = r.content_length
                    if size is None:
                        raise OriginError(f"http source: {safe_url(url)} gave no Content-Length")
                    out.append(OriginFile(path, size, _revision(r)))
            except aiohttp.ClientError as e:
                raise OriginError(f"http source: {safe_url(url)}: {e.__class__.__name__}: {e}") from None
        return out

    async def read(self, path: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        url = self._url(path)
        headers = self._headers()
        rng = range_header(offset, length)
        if rng is not None:
            headers["Range"] = rng
        try:
            async with await self._request("GET", url, headers) as r:
                _check(r, path)
                if "Range" in headers and r.status != 206:
                    raise OriginError(f"http source: {safe_url(url)} ignored the Range request "
                                      f"(status {r.status})")
                async for chunk in r.content.iter_chunked(CHUNK):
                    yield chunk
        except aiohttp.ClientError as e:
            raise OriginError(f"http source: {safe_url(url)}: {e.__class__.__name__}: {e}") from None

    async def range_reader(self, path: str) -> PlainGet:
        return PlainGet(self._url(path), self._headers())

    def describe(self) -> dict[str, object]:
        d: dict[str, object] = {"type": self.kind}
        if self.source.base_url:
            d["baseUrl"] = safe_url(self.source.base_url)
        return d


def _check(r: aiohttp.ClientResponse, path: str) -> None:
    if r.status >= 400:
        raise OriginError(f"http source: {safe_url(str(r.url))}: {r.status} {r.reason} for {path}")


def _revision(r: aiohttp.ClientResponse) -> dict[str, object]:
    rev: dict[str, object] = {"size": r.content_length}
    for h, k in (("ETag", "etag"), ("Last-Modified", "lastModified")):
        if h in r.headers:
            rev[k] = r.headers[h]
    return rev

