"""A web seed declined by the gateway (a request outside the node's origin share) comes back
for the same file: a real libtorrent session and the real gateway over loopback.

libtorrent takes any error status as "this URL lacks the file" and never asks that URL for the
file again; without fresh URLs (Swarm.pump) a node's own pieces of that file waited for the
stuck fallback (issue 16: 1-4 datasets in 30 stalled 20 s each at 8 nodes)."""

from __future__ import annotations

import asyncio
import time

import libtorrent as lt

from harness import pseudo_random, write_data
from reconciler.adapters.gateway import Gateway
from reconciler.adapters.sources import OriginContext, open_origin
from reconciler.adapters.swarm import Swarm
from reconciler.model.desired import FileSource
from reconciler.torrent.hybrid import FileHasher, build_torrent

PIECE = 16 << 10
FILES = {"a.bin": pseudo_random(4 * PIECE, "a"), "b.bin": pseudo_random(4 * PIECE, "b")}


def torrent() -> tuple[bytes, str]:
    hashed = []
    for rel, data in FILES.items():
        h = FileHasher(PIECE)
        h.update(data)
        hashed.append((rel, h.finish()))
    raw = build_torrent("ds", PIECE, hashed)
    ti = lt.torrent_info(lt.bdecode(raw))
    return raw, str(ti.info_hashes().v2)


async def test_a_declined_file_is_asked_for_again_once_it_is_in_the_share(tmp_path):
    raw, ih = torrent()
    gw = Gateway()
    await gw.start()
    swarm = Swarm("127.0.0.1:0")
    try:
        async with OriginContext(tmp_path) as ctx:
            src = write_data(tmp_path / "origin", FILES)
            url = gw.register("ds", ih, "ds", tuple((f, len(d)) for f, d in FILES.items()),
                              open_origin(FileSource(str(src)), ctx))
            gw.allow("ds", ih, {"a.bin": ((0, len(FILES["a.bin"]) - 1),)})  # b.bin: not ours
            swarm.set_allowed([gw.host])
            st = swarm.add(ih, raw, tmp_path / "save", sum(map(len, FILES.values())))
            swarm.web_seed(ih, url)
            deadline = time.monotonic() + 30
            declined_at: float | None = None
            widened = False
            while not st.handle.status().is_seeding and time.monotonic() < deadline:
                swarm.pump()
                if gw.declined and declined_at is None:
                    declined_at = time.monotonic()
                # b.bin declined on both URLs (or on one, and the other had its chance)
                if not widened and declined_at is not None and \
                        (gw.declined >= 2 or time.monotonic() - declined_at > 3):
                    gw.allow("ds", ih, None)  # now everything is this node's share
                    widened = True
                await asyncio.sleep(0.05)
            assert widened, "libtorrent never asked for b.bin"
            print(f"declined {gw.declined}")
            assert st.handle.status().is_seeding, st.handle.status().pieces
            for rel, data in FILES.items():
                assert (tmp_path / "save" / "ds" / rel).read_bytes() == data
    finally:
        swarm.close()
        await gw.stop()
