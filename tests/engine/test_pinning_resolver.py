"""The resolver's side of the metadata protocol, against real API servers on loopback."""

from __future__ import annotations

import pytest

from factories import dataset, torrent
from reconciler.engine.pinning import Pinner, Work
from reconciler.core.pinning import metadata_key
from reconciler.adapters.sources import OriginContext
from reconciler.adapters.store import Store


class Peer:
    """A node's metadata answer, fixed; counts the requests."""

    def __init__(self, status: int, body: bytes | dict) -> None:
        self.status, self.body, self.asked = status, body, 0

    def answer(self, ds: str, key: str) -> tuple[int, bytes | dict]:
        self.asked += 1
        return self.status, self.body


async def noop(ds: str, n: int) -> None:
    return None


@pytest.fixture
async def ask(tmp_path, api_servers):
    """`await ask(me, {node: Peer})`: serve each Peer's answer on its own API, then let a
    resolver on node `me` run one round of asking them (ranked by name)."""
    resolvers: list[Pinner] = []

    async def run(me: str, peers: dict[str, Peer], extra_api: dict[str, str] | None = None):
        api_of = {n: f"127.0.0.1:{(await api_servers(lambda: None, metadata=p.answer)).port}"
                  for n, p in peers.items()}
        api_of.update(extra_api or {})
        d = dataset("w", locked=False)
        r = Pinner(me, Store(tmp_path), noop)
        resolvers.append(r)
        w = Work(d, metadata_key(d), tuple(sorted([me, *api_of])), api_of,
                 OriginContext(tmp_path))
        return await r._ask_peers(w)

    yield run
    for r in resolvers:
        await r.close()


async def test_a_waiting_node_asks_only_the_first_ranked_while_it_builds(ask):
    peers = {"a": Peer(202, {"state": "building"}), "b": Peer(202, {"state": "waiting"}),
             "d": Peer(202, {"state": "waiting"})}
    answers, found = await ask("c", peers)
    assert found is None and answers == {"a": "building"}
    assert [p.asked for p in peers.values()] == [1, 0, 0]


async def test_silent_nodes_above_make_it_ask_everyone_and_take_from_a_holder_below(ask):
    peers = {"a": Peer(404, {"state": "unknown"}), "d": Peer(200, torrent("w")),
             "e": Peer(202, {"state": "waiting"})}
    answers, found = await ask("b", peers)
    assert found == ("d", torrent("w"))
    assert answers["a"] == "unknown" and answers["d"] == "has"


async def test_unreachable_and_garbage_answers(ask):
    peers = {"a": Peer(500, {"error": "boom"}), "b": Peer(202, {"state": "nonsense"})}
    # nothing listens on port 1
    answers, found = await ask("c", peers, extra_api={"z": "127.0.0.1:1"})
    assert found is None and answers == {"a": "unknown", "b": "unknown", "z": "unreachable"}


def test_answer_says_what_this_node_is_doing(tmp_path):
    r = Pinner("n1", Store(tmp_path), noop)
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
