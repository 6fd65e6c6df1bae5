"""Building an unlocked dataset's torrent on a node: its origin reads hold the node's
`originConnections` slots (the gateway's), with a real HTTP origin."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from harness import pseudo_random
from origin_server import OriginServer
from reconciler.adapters.sources import OriginContext
from reconciler.adapters.store import Store
from reconciler.core.pinning import metadata_key
from reconciler.engine.pinning import Pinner, Work
from reconciler.model.desired import Dataset, HttpSource, Placement

FILES = {"a.bin": pseudo_random(3 << 20, "build-a"), "b.bin": pseudo_random(2 << 20, "build-b")}


async def noop(ds: str, n: int) -> None:
    return None


@pytest.fixture
def origin(origins):
    # Slow connections, so that parallel range requests overlap and the cap is what limits.
    return origins(FILES, conn_rate=8 << 20)


async def build(tmp_path: Path, origin: OriginServer, slots: asyncio.Semaphore | None) -> bool:
    d = Dataset("w", "v1", HttpSource(base_url=origin.url + "/", files=tuple(sorted(FILES))),
                Placement(all=True), "ds/w")
    ctx = OriginContext(tmp_path)
    pinner = Pinner("me", Store(tmp_path / "state"), noop, slots=slots, streams=8)
    try:
        return await pinner._build(Work(d, metadata_key(d), ("me",), {}, ctx))
    finally:
        await pinner.close()
        await ctx.close()


async def test_a_build_holds_the_nodes_origin_connection_slots(tmp_path, origin):
    assert await build(tmp_path / "capped", origin, asyncio.Semaphore(2))
    assert origin.max_active == 2
    origin.max_active = 0
    assert await build(tmp_path / "free", origin, None)  # without the node's cap: more at once
    assert origin.max_active > 2
