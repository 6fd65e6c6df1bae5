"""The API's `/cluster` (every inventory node's /status through this node, aggregated) and `/`
(the HTML page): real aiohttp servers as the other nodes, real client requests."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import aiohttp
from factories import dataset, node, state

from reconciler.adapters.cluster_view import CachedCluster, summarize
from reconciler.adapters.status_file import DatasetStatus, NodeReport, now_rfc3339, render_status
from reconciler.model.desired import Placement

TIMEOUT = aiohttp.ClientTimeout(total=10)


def doc(name: str, phase: str, done: int, origin: int, peers: int, version: str = "v1") -> dict:
    now = now_rfc3339()
    return render_status(NodeReport(
        node=name, observed_revision="rev1", last_applied_revision="rev1", started_at=now,
        finished_at=now, result="Converged" if phase == "Ready" else "Progressing",
        datasets={"llama": DatasetStatus(phase, version, "/d/llama", "a" * 64, bytes_total=1000,  # type: ignore[arg-type]
                                         bytes_done=done, bytes_from_origin=origin,
                                         bytes_from_peers=peers, download_rate=10)}), None)


async def get(url: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        async with s.get(url) as r:
            return r.status, dict(r.headers), await r.read()


class Holder:
    def __init__(self, d: dict | None) -> None:
        self.doc = d

    def __call__(self) -> dict | None:
        return self.doc


async def test_cluster_aggregates_inventory_nodes_through_this_node(api_servers) -> None:
    b = await api_servers(Holder(doc("b", "Ready", 1000, 300, 700)))
    c = await api_servers(Holder(doc("c", "Fetching", 400, 100, 300)))
    wrong = await api_servers(Holder(doc("someone-else", "Ready", 1000, 0, 0)))
    inventory = [node("a", 1), node("b", 1), node("c", 1), node("d", 1), node("e", 1)]
    st = state(inventory, [dataset("llama", size=1000), dataset("other", size=50,
                                                                 placement=Placement(nodes=("e",)))])
    nodes = {n.name: n for n in inventory}
    nodes["b"] = dataclasses.replace(nodes["b"], api=f"127.0.0.1:{b.port}")
    nodes["c"] = dataclasses.replace(nodes["c"], api=f"127.0.0.1:{c.port}")
    nodes["d"] = dataclasses.replace(nodes["d"], api=f"127.0.0.1:{wrong.port}")
    await wrong.stop()  # d: connection refused
    nodes["e"] = dataclasses.replace(nodes["e"], api=f"127.0.0.1:{b.port}")  # answers as "b"
    st = dataclasses.replace(st, nodes=nodes)
    a = await api_servers(Holder(doc("a", "Ready", 1000, 600, 400)), desired=st)

    code, headers, body = await get(a.url + "/cluster?url=http://169.254.169.254/")
    assert code == 200 and headers["Cache-Control"] == "no-store"
    v = json.loads(body)
    assert v["node"] == "a" and v["revision"] == "rev1"
    assert v["nodes"]["a"]["status"]["node"] == "a"  # its own document, not fetched
    assert v["nodes"]["b"]["status"]["datasets"]["llama"]["phase"] == "Ready"
    assert v["nodes"]["c"]["status"]["datasets"]["llama"]["bytesDone"] == 400
    assert v["nodes"]["d"]["error"] == "connection refused"
    assert v["nodes"]["e"]["error"].startswith("wrong node")
    llama = v["datasets"]["llama"]
    assert llama["bytesFromOrigin"] == 1000 and llama["bytesFromPeers"] == 1400
    assert llama["originAmplification"] == 1.0 and llama["bytesTotal"] == 1000
    assert llama["ready"] == 2 and llama["placed"] == ["a", "b", "c", "d", "e"]
    assert v["underReplicated"] == ["llama", "other"]
    assert v["datasets"]["other"]["ready"] == 0 and v["datasets"]["other"]["bytesTotal"] == 50
    assert v["totals"] == {"bytesTotal": 1050, "bytesFromOrigin": 1000, "bytesFromPeers": 1400,
                           "originAmplification": round(1000 / 1050, 3)}


async def test_cluster_without_a_desired_state_is_503_and_pending_everywhere_renders() -> None:
    st = state([node("a"), node("b", 2)], [dataset("llama", size=1000)])
    s = summarize({"a": {"status": None, "error": "timeout"}, "b": {"error": "x"}}, st)
    d = s["datasets"]["llama"]  # type: ignore[index]
    assert d["bytesTotal"] == 1000 and d["ready"] == 0 and d["originAmplification"] == 0.0
    assert s["underReplicated"] == ["llama"]


async def test_cluster_fans_out_once_per_interval_whoever_asks(api_servers) -> None:
    hits = []

    def counting() -> dict:
        hits.append(1)
        return doc("b", "Ready", 1000, 0, 1000)
    b = await api_servers(counting)
    st = state([node("a"), dataclasses.replace(node("b"), api=f"127.0.0.1:{b.port}")],
               [dataset("llama")])
    cache = CachedCluster(cache_for=3600)
    own = doc("a", "Ready", 1000, 1000, 0)
    views = await asyncio.gather(*(cache.get(st, own) for _ in range(20)))
    assert all(v is views[0] for v in views)
    assert len(hits) == 1


async def test_no_state_yet_cluster_503_page_served_with_a_strict_csp(api_servers) -> None:
    a = await api_servers(Holder(None))
    code, _, body = await get(a.url + "/cluster")
    assert code == 503 and "error" in json.loads(body)
    code, headers, body = await get(a.url + "/")
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'sha256-" in csp
    assert "connect-src 'self'" in csp and headers["X-Frame-Options"] == "DENY"
    html = body.decode()
    assert 'fetch("/cluster"' in html and "http://" not in html and "https://" not in html


async def test_whatever_answers_at_a_spec_api_address_passes_on_little(api_servers) -> None:
    """Not a syncbit node (an internal service a committer pointed spec.api at): nothing of its
    body but a shortened JSON `error`; a 200 that is not a NodeStatus of that node: nothing."""
    from aiohttp import web

    async def secret(request: web.Request) -> web.Response:
        if request.path != "/status":
            return web.json_response({"never": "asked"})
        return web.json_response({"error": "x" * 5000, "other": "internal data"}, status=404)

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"kind": "Something", "internal": "data"})
    runners = []
    ports = []
    for handler in (secret, ok):
        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        r = web.AppRunner(app)
        await r.setup()
        site = web.TCPSite(r, "127.0.0.1", 0)
        await site.start()
        runners.append(r)
        ports.append(r.addresses[0][1])
    try:
        st = state([node("a"), dataclasses.replace(node("b"), api=f"127.0.0.1:{ports[0]}"),
                    dataclasses.replace(node("c"), api=f"127.0.0.1:{ports[1]}")],
                   [dataset("llama")])
        a = await api_servers(Holder(doc("a", "Ready", 1000, 1000, 0)), desired=st)
        code, _, body = await get(a.url + "/cluster")
        v = json.loads(body)
        assert code == 200
        assert v["nodes"]["b"]["status"] is None
        assert v["nodes"]["b"]["error"] == "HTTP 404: " + "x" * 200 + "..."
        assert v["nodes"]["c"] == {"api": f"127.0.0.1:{ports[1]}", "status": None,
                                   "error": "invalid response: not a NodeStatus document"}
        assert "internal" not in body.decode()
    finally:
        for r in runners:
            await r.cleanup()


def test_summary_names_unsatisfiable_placement_per_dataset() -> None:
    st = state([node("a"), node("b", 2)], [dataset("five", Placement(replicas=5)),
                                            dataset("fine", Placement(replicas=1))])
    s = summarize({}, st)
    assert s["placementUnsatisfiable"] == ["five"]
    [w] = s["datasets"]["five"]["placementWarnings"]  # type: ignore[index]
    assert w.startswith("spec.placement.replicas: dataset five: replicas: 5 cannot be satisfied")
    assert s["datasets"]["fine"]["placementWarnings"] == []  # type: ignore[index]
