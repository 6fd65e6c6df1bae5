"""Vetting a peer's torrent against the source, with a real HTTP origin and real peer APIs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from factories import torrent
from harness import pseudo_random, write_data
from origin_server import OriginServer
from reconciler.adapters.sources import OriginContext
from reconciler.adapters.store import Store
from reconciler.core.pinning import metadata_key
from reconciler.engine.locking import build_lock
from reconciler.engine.pinning import Pinner, Work
from reconciler.model.desired import Dataset, HttpSource, Placement

FILES = {"a.bin": pseudo_random(70_000, "vet-a"), "b.json": b'{"x": 1}\n'}


async def noop(ds: str, n: int) -> None:
    return None


@pytest.fixture
def origin(tmp_path):
    server = OriginServer(write_data(tmp_path / "origin", FILES)).start()
    yield server
    server.stop()


@pytest.fixture
async def setup(tmp_path: Path, origin: OriginServer):
    d = Dataset("w", "v1", HttpSource(base_url=origin.url + "/", files=tuple(sorted(FILES))),
                Placement(all=True), "ds/w")
    ctx = OriginContext(tmp_path)
    pinner = Pinner("me", Store(tmp_path / "state"), noop)
    w = Work(d, metadata_key(d), ("me",), {}, ctx)
    try:
        yield pinner, w, d, ctx
    finally:
        await pinner.close()
        await ctx.close()


async def test_the_torrent_the_source_gives_is_accepted_without_reading_bytes(setup, origin):
    pinner, w, d, ctx = setup
    genuine = await build_lock(d, ctx)
    origin.bytes_sent = 0
    assert await pinner._vet(w, genuine) is None
    assert origin.bytes_sent == 0  # HEAD requests only
    assert {m for m, _, _ in origin.requests[-2:]} == {"HEAD"}
    assert not w.refused


async def test_other_bytes_are_refused_and_remembered(setup, api_servers):
    pinner, w, d, ctx = setup
    forged = torrent("w", b"y" * 5000)
    why = await pinner._vet(w, forged)
    assert why is not None and "does not match the http source" in why
    assert len(w.refused) == 1
    # The same answer again counts as `failed` without asking the source.
    srv = await api_servers(lambda: None, metadata=lambda ds, key: (200, forged))
    w.api_of = {"peer": f"127.0.0.1:{srv.port}"}
    w.ranked = ("peer", "me")
    assert await pinner._ask(w, "peer") == ("failed", None)


async def test_a_source_that_changed_since_makes_the_torrent_stale(setup, tmp_path):
    pinner, w, d, ctx = setup
    genuine = await build_lock(d, ctx)
    (tmp_path / "origin" / "a.bin").write_bytes(pseudo_random(70_000, "vet-a2"))  # same size
    why = await pinner._vet(w, genuine)
    assert why is not None and "the source reports other revisions (changed since, or forged): a.bin" in why


async def test_an_unreachable_source_refuses_for_now_but_does_not_blacklist(setup):
    pinner, w, d, ctx = setup
    genuine = await build_lock(d, ctx)
    # The same source, now down (nothing listens on port 1).
    w.dataset = dataclasses.replace(d, source=HttpSource(base_url="http://127.0.0.1:1/",
                                                         files=d.source.files))
    why = await pinner._vet(w, genuine)
    assert why is not None and "cannot check it against the http source" in why
    assert not w.refused
