"""The resolver's side of the metadata protocol, against real API servers on loopback."""

from __future__ import annotations

from pathlib import Path

from factories import dataset
from reconciler.api import ApiServer
from reconciler.executor.unlocked import Resolver, Work
from reconciler.metadata import metadata_key
from reconciler.sources import OriginContext
from reconciler.store import Store
from test_metadata import torrent


class Peer:
    """A node's API answering the metadata question with a fixed answer; counts requests."""

    def __init__(self, status: int, body: bytes | dict) -> None:
        self.status, self.body, self.asked = status, body, 0
        self.api = ApiServer("127.0.0.1:0", lambda: None, metadata=self.answer)

    def answer(self, ds: str, key: str) -> tuple[int, bytes | dict]:
        self.asked += 1
        return self.status, self.body


async def noop(ds: str, n: int) -> None:
    return None


async def resolver_and_work(tmp_path: Path, me: str, peers: dict[str, Peer]
                            ) -> tuple[Resolver, Work]:
    for p in peers.values():
        await p.api.start()
    d = dataset("w", locked=False)
    ranked = tuple(sorted([me, *peers]))
    api_of = {n: f"127.0.0.1:{p.api.port}" for n, p in peers.items()}
    r = Resolver(me, Store(tmp_path), noop)
    return r, Work(d, metadata_key(d), ranked, api_of, OriginContext(tmp_path))


async def test_a_waiting_node_asks_only_the_first_ranked_while_it_builds(tmp_path):
    peers = {"a": Peer(202, {"state": "building"}), "b": Peer(202, {"state": "waiting"}),
             "d": Peer(202, {"state": "waiting"})}
    r, w = await resolver_and_work(tmp_path, "c", peers)
    try:
        answers, found = await r._ask_peers(w)
        assert found is None and answers == {"a": "building"}
        assert [p.asked for p in peers.values()] == [1, 0, 0]
    finally:
        await r.close()
        for p in peers.values():
            await p.api.stop()


async def test_silent_nodes_above_make_it_ask_everyone_and_take_from_a_holder_below(tmp_path):
    peers = {"a": Peer(404, {"state": "unknown"}), "d": Peer(200, torrent("w")),
             "e": Peer(202, {"state": "waiting"})}
    r, w = await resolver_and_work(tmp_path, "b", peers)
    try:
        answers, found = await r._ask_peers(w)
        assert found == ("d", torrent("w"))
        assert answers["a"] == "unknown" and answers["d"] == "has"
    finally:
        await r.close()
        for p in peers.values():
            await p.api.stop()


async def test_unreachable_and_garbage_answers(tmp_path):
    peers = {"a": Peer(500, {"error": "boom"}), "b": Peer(202, {"state": "nonsense"})}
    r, w = await resolver_and_work(tmp_path, "c", peers)
    w.api_of = {**w.api_of, "z": "127.0.0.1:1"}  # nothing listens on port 1
    w.ranked = ("a", "b", "c", "z")
    try:
        answers, found = await r._ask_peers(w)
        assert found is None and answers == {"a": "unknown", "b": "unknown", "z": "unreachable"}
    finally:
        await r.close()
        for p in peers.values():
            await p.api.stop()


def test_answer_says_what_this_node_is_doing(tmp_path):
    r = Resolver("n1", Store(tmp_path), noop)
    d = dataset("w", locked=False)
    key = metadata_key(d)
    assert r.answer("w", key) == (404, {"state": "unknown", "node": "n1"})
    w = r.work["w"] = Work(d, key, ("n1",), {}, OriginContext(tmp_path))
    w.state, w.bytes_done, w.bytes_total = "building", 5, 10
    assert r.answer("w", key) == (202, {"state": "building", "node": "n1", "bytesDone": 5,
                                        "bytesTotal": 10})
    assert r.answer("w", "0" * 32)[0] == 404  # another key: another version
    w.state, w.error = "failed", "building the torrent from the file source: boom"
    assert r.answer("w", key) == (404, {"state": "failed", "node": "n1", "error": w.error})
    r.cache.put(d, torrent("w"))
    assert r.answer("w", key) == (200, torrent("w"))
    assert r.asked_within(60)
