"""Credentials never follow a redirect to another origin: real servers on two loopback addresses.

`home` (127.0.0.2) is the configured origin and redirects as each test asks; `other`
(127.0.0.3) records every request's headers and serves the bytes, like a CDN would.
"""

from __future__ import annotations

from typing import AsyncIterator

import pytest
from aiohttp import web

from two_servers import Handler, Server, two_servers
from reconciler.adapters.sources import OriginContext, OriginError
from reconciler.adapters.sources.hf import HfOrigin
from reconciler.adapters.sources.http import HttpOrigin
from reconciler.adapters.sources.s3 import S3Origin
from reconciler.engine.locking import build_lock
from reconciler.model.desired import Dataset, HfSource, HttpSource, Placement, S3Source

DATA = bytes(range(256)) * 40
SECRET = "s3cr3t-redirect-9f2c"
COMMIT = "c" * 40

def serve_bytes(request: web.Request) -> web.Response:
    """DATA, with Range support (HEAD too), as an origin or a CDN would serve it."""
    rng = request.headers.get("Range")
    if rng:
        a, _, b = rng.removeprefix("bytes=").partition("-")
        start, end = int(a), int(b) if b else len(DATA) - 1
        return web.Response(status=206, body=DATA[start:end + 1], headers={
            "Content-Range": f"bytes {start}-{end}/{len(DATA)}", "ETag": '"e1"'})
    return web.Response(body=DATA, headers={"ETag": '"e1"'})


def redirect(to: str, status: int = 302) -> Handler:
    async def h(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, headers={"Location": to + request.path_qs})
    return h


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Server, Server]]:
    async with two_servers() as pair:
        yield pair


def http_origin(ctx: OriginContext, base: str) -> HttpOrigin:
    headers = {"X-Api-Key": "${KEY}", "PRIVATE-TOKEN": "${KEY}", "Authorization": "Bearer ${KEY}"}
    return HttpOrigin(HttpSource(base_url=base, files=("a.bin",), headers=headers), ctx.http,
                      env={"KEY": SECRET})


async def read_all(origin: HttpOrigin | HfOrigin, path: str, offset: int = 0,
                   length: int | None = None) -> bytes:
    return b"".join([c async for c in origin.read(path, offset, length)])


async def test_http_headers_stay_with_their_origin_across_a_redirect(tmp_path, servers):
    home, other = servers
    home.handler = redirect(other.url)
    other.handler = lambda r: _async(serve_bytes(r))
    async with OriginContext(tmp_path) as ctx:
        origin = http_origin(ctx, home.url)
        files = await origin.list_files()
        assert [(f.path, f.size) for f in files] == [("a.bin", len(DATA))]
        assert await read_all(origin, "a.bin") == DATA
        assert await read_all(origin, "a.bin", 1000, 500) == DATA[1000:1500]
    # The configured origin got every header; the other host none of them, but the Range.
    assert all(h.get("X-Api-Key") == SECRET for _, _, h in home.seen) and len(home.seen) == 3
    assert [m for m, _, _ in other.seen] == ["HEAD", "GET", "GET"]
    assert not any(SECRET in v for v in other.header_values()), other.seen
    assert other.seen[2][2]["Range"] == "bytes=1000-1499"


async def test_http_same_origin_redirect_keeps_the_headers(tmp_path, servers):
    home, _ = servers

    async def h(request: web.Request) -> web.StreamResponse:
        if request.path == "/a.bin":
            return web.Response(status=301, headers={"Location": "/moved/a.bin"})
        if request.headers.get("X-Api-Key") != SECRET:
            return web.Response(status=401)
        return serve_bytes(request)

    home.handler = h
    async with OriginContext(tmp_path) as ctx:
        origin = http_origin(ctx, home.url)
        assert await read_all(origin, "a.bin") == DATA
    assert [p for _, p, _ in home.seen] == ["/a.bin", "/moved/a.bin"]


async def test_once_a_redirect_left_the_origin_coming_back_gets_no_credential(tmp_path, servers):
    home, other = servers

    async def h(request: web.Request) -> web.StreamResponse:
        if request.path == "/a.bin":
            return web.Response(status=307, headers={"Location": other.url + "/bounce"})
        return serve_bytes(request)

    home.handler = h
    other.handler = redirect(home.url + "/back")
    async with OriginContext(tmp_path) as ctx:
        assert await read_all(http_origin(ctx, home.url), "a.bin") == DATA
    assert [p for _, p, _ in home.seen] == ["/a.bin", "/back/bounce"]
    assert "X-Api-Key" not in home.seen[1][2] and "Authorization" not in home.seen[1][2]
    assert not any(SECRET in v for v in other.header_values())


async def test_a_redirect_loop_ends_with_a_clear_error(tmp_path, servers):
    home, other = servers
    home.handler = redirect(home.url)  # to itself, forever
    async with OriginContext(tmp_path) as ctx:
        with pytest.raises(OriginError, match="more than 5 redirects"):
            await read_all(http_origin(ctx, home.url), "a.bin")
    assert len(home.seen) == 6 and not other.seen


async def test_a_redirect_without_location_is_refused(tmp_path, servers):
    home, _ = servers

    async def h(request: web.Request) -> web.StreamResponse:
        return web.Response(status=302)

    home.handler = h
    async with OriginContext(tmp_path) as ctx:
        with pytest.raises(OriginError, match="without a Location"):
            await read_all(http_origin(ctx, home.url), "a.bin")


async def test_hf_token_goes_to_the_endpoint_only_for_bytes_and_metadata(tmp_path, servers):
    home, other = servers
    repo = "org/model"

    async def cdn(request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/api/"):  # the metadata a redirected Hub API call lands on
            return web.json_response([{"type": "file", "path": "a.bin", "size": len(DATA),
                                       "oid": "0" * 40}])
        return serve_bytes(request)

    home.handler = redirect(other.url)  # the Hub sends everything to "the CDN"
    other.handler = cdn
    async with OriginContext(tmp_path) as ctx:
        origin = HfOrigin(HfSource(repo), ctx.http, pinned_commit=COMMIT,
                          env={"HF_ENDPOINT": home.url, "HF_TOKEN": SECRET})
        assert await read_all(origin, "a.bin", 10, 90) == DATA[10:100]
        files = await origin.list_files()  # huggingface_hub's own client, redirected too
        assert [(f.path, f.size) for f in files] == [("a.bin", len(DATA))]
    assert {p.split("?")[0] for _, p, _ in home.seen} == {
        f"/{repo}/resolve/{COMMIT}/a.bin", f"/api/models/{repo}/tree/{COMMIT}"}
    assert all(h.get("Authorization") == f"Bearer {SECRET}" for _, _, h in home.seen)
    assert len(other.seen) == 2
    assert not any(SECRET in v for v in other.header_values()), other.seen


@pytest.mark.parametrize("status", [301, 307])
async def test_s3_never_follows_a_location_to_another_host(tmp_path, servers, monkeypatch,
                                                           status):
    """botocore sends with urllib3 `Retry(False)` (no redirects); its region redirector only
    re-signs for the region S3 names, on the same configured endpoint. The other host gets
    nothing, and the error is plain."""
    home, other = servers

    async def h(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, headers={
            "Location": other.url + request.path_qs, "x-amz-bucket-region": "eu-west-1"})

    home.handler = h
    other.handler = lambda r: _async(serve_bytes(r))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDREDIRECT")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    for v in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(v, raising=False)
    origin = S3Origin(S3Source("bkt", keys=("a.bin",), endpoint_url=home.url,
                               region="us-east-1"))
    with pytest.raises(OriginError) as e:
        await origin.list_files()
    assert SECRET not in str(e.value)
    assert home.seen and not other.seen
    assert all(SECRET not in v for v in home.header_values())


async def _async(r: web.StreamResponse) -> web.StreamResponse:
    return r


async def test_a_lock_read_on_threads_leaves_a_redirect_to_this_policy(tmp_path, servers):
    """`build_lock` reads an http file on threads (engine/threaded_read.py) only where the
    configured URL answers the range itself: a redirect falls back to `HttpOrigin.read`, so
    the other origin still gets no credential, and the bytes are read once."""
    home, other = servers
    home.handler = redirect(other.url)
    other.handler = lambda r: _async(serve_bytes(r))
    async with OriginContext(tmp_path) as ctx:
        origin = http_origin(ctx, home.url)
        dataset = Dataset(name="ds", version="1", source=origin.source,
                          placement=Placement(all=True), path="ds")
        await build_lock(dataset, ctx, write_to=tmp_path / "out", origin=origin)
    assert (tmp_path / "out" / "a.bin").read_bytes() == DATA
    assert not any(SECRET in v for v in other.header_values()), other.seen
    # The thread's GET got the redirect and read nothing; HttpOrigin.read followed it.
    assert [m for m, _, _ in home.seen] == ["HEAD", "GET", "GET"]
    assert [m for m, _, _ in other.seen] == ["HEAD", "GET"]
