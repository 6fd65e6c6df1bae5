"""reconciler.app.cluster: `status --cluster` against real ApiServers on loopback addresses."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from factories import dataset, node, state
from harness import NodeHome, StateRepo, dataset_yaml, free_port, node_yaml, run_cli
from rich.console import Console

from reconciler.app.cluster import fetch_cluster, render_cluster, summary_line
from reconciler.model.desired import Placement
from reconciler.adapters.status_file import (
    DatasetStatus,
    NodeReport,
    now_rfc3339,
    pass_result,
    render_status,
)

REV_A, REV_B = "a" * 40, "b" * 40


def doc(name: str, applied: str, datasets: dict[str, DatasetStatus]) -> dict:
    now = now_rfc3339()
    return render_status(NodeReport(node=name, observed_revision=applied,
                                    last_applied_revision=applied, started_at=now,
                                    finished_at=now, result=pass_result(datasets, False),
                                    datasets=datasets))


def ready(size: int = 100) -> DatasetStatus:
    return DatasetStatus("Ready", "v1", "/data/x", "c" * 64, bytes_total=size, bytes_done=size)


def cluster_state(ports: dict[str, str], revision: str = REV_A):
    """node-a, node-b serving, node-c not; datasets placed so every cell kind shows up."""
    nodes = [node(n, i) for i, n in enumerate(sorted(ports), start=21)]
    nodes = [type(n)(name=n.name, peer=n.peer, api=ports[n.name]) for n in nodes]
    return state(nodes, [
        dataset("llama", Placement(all=True)),
        dataset("shards", Placement(nodes=("node-a", "node-b"))),
        dataset("tiny", Placement(nodes=("node-a", "node-b"))),
        dataset("eval", Placement(nodes=("node-c",))),
    ], revision=revision)


def render(table) -> str:  # type: ignore[no-untyped-def]
    console = Console(record=True, width=200)
    console.print(table)
    return console.export_text()


def row(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if f" {name} " in line)


async def test_fetch_and_render_two_reachable_one_refused(api_servers) -> None:
    a = await api_servers(listen="127.0.0.21:0", get_status=lambda: doc("node-a", REV_A, {
        "llama": ready(), "tiny": ready(),
        "shards": DatasetStatus("Fetching", "v1", None, "c" * 64, bytes_total=1000, bytes_done=420)}))
    b = await api_servers(listen="127.0.0.22:0", get_status=lambda: doc("node-b", REV_B, {
        "llama": ready(), "tiny": ready(),
        "shards": DatasetStatus("Failed", "v1", error="origin said 403"),
        "retired": DatasetStatus("Draining", "v0", "/data/retired")}))
    down = f"127.0.0.23:{free_port('127.0.0.23')}"  # nothing listens there
    st = cluster_state({"node-a": f"127.0.0.21:{a.port}", "node-b": f"127.0.0.22:{b.port}",
                        "node-c": down})

    results = await fetch_cluster(st, timeout=5.0)
    assert sorted(results) == ["node-a", "node-b", "node-c"]
    assert results["node-a"]["status"]["node"] == "node-a"
    assert results["node-b"]["status"]["datasets"]["shards"]["phase"] == "Failed"
    assert results["node-c"] == {"error": "connection refused"}

    text = render(render_cluster(results, st))
    header = next(line for line in text.splitlines() if " node " in line)
    cols = ["node", "result", "applied revision", "eval", "llama", "shards", "tiny",
            "retired (removed)"]
    assert [header.index(c) for c in cols] == sorted(header.index(c) for c in cols)

    ra = row(text, "node-a")
    assert "Progressing" in ra and "aaaaaaaaaaaa (current)" in ra and "a" * 13 not in ra
    assert ra.split().count("Ready") == 2 and "Fetching 42%" in ra
    rb = row(text, "node-b")
    assert "bbbbbbbbbbbb (differs)" in rb and "Failed" in rb and "Draining" in rb
    rc = row(text, "node-c")
    assert "unreachable: connection refused" in rc
    assert "?" in rc  # eval and llama are placed there, but we cannot know

    line = summary_line(results, st)
    # tiny is Ready on both of its nodes; llama is not known on node-c, eval is only there
    assert line.startswith("2/3 nodes reachable, 1/4 datasets Ready")


async def test_a_node_without_status_and_a_node_that_never_answers(api_servers) -> None:
    # started, no pass finished yet
    empty = await api_servers(listen="127.0.0.24:0", get_status=lambda: None)

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read()  # read the request, never answer
        finally:
            writer.close()

    hang = await asyncio.start_server(silent, "127.0.0.25", 0)
    try:
        hport = hang.sockets[0].getsockname()[1]
        st = state([node("node-d", 24), node("node-e", 25)], [dataset("llama")])
        st = type(st)(st.revision, {
            "node-d": type(st.nodes["node-d"])("node-d", "127.0.0.24:1", f"127.0.0.24:{empty.port}"),
            "node-e": type(st.nodes["node-e"])("node-e", "127.0.0.25:1", f"127.0.0.25:{hport}"),
        }, st.datasets)
        # a generous timeout for the node that answers, a short one for the one that never does
        only = lambda n: type(st)(st.revision, {n: st.nodes[n]}, st.datasets)
        results = {**await fetch_cluster(only("node-d"), timeout=10.0),
                   **await fetch_cluster(only("node-e"), timeout=0.5)}
    finally:
        hang.close()
        await hang.wait_closed()
    assert results["node-d"] == {"error": "HTTP 503: no pass has finished yet"}
    assert results["node-e"] == {"error": "timeout after 0.5s"}
    text = render(render_cluster(results, st))
    assert "error: HTTP 503: no pass has finished yet" in row(text, "node-d")
    assert "unreachable: timeout after 0.5s" in row(text, "node-e")
    assert summary_line(results, st).startswith("1/2 nodes reachable (1 without a status), 0/1")


async def test_a_node_answering_for_another_name_is_an_error(api_servers) -> None:
    srv = await api_servers(listen="127.0.0.26:0", get_status=lambda: doc("gpu-99", REV_A, {}))
    st = state([node("node-f", 26)], [dataset("llama")])
    st = type(st)(st.revision, {"node-f": type(st.nodes["node-f"])(
        "node-f", "127.0.0.26:1", f"127.0.0.26:{srv.port}")}, st.datasets)
    results = await fetch_cluster(st, timeout=5.0)
    assert "answers as 'gpu-99'" in results["node-f"]["error"]


DATASETS = "---\n".join(
    dataset_yaml(name, {"file": {"path": f"data/{name}"}}, placement=placement, path=path)
    for name, placement, path in [("llama", {"all": True}, "models/llama"),
                                  ("shards", {"nodes": ("node-b",)}, "shards")])


async def test_cli_status_cluster_table_and_json(api_servers, tmp_path: Path) -> None:
    docs: dict[str, dict | None] = {"node-a": None, "node-b": None}
    a = await api_servers(listen="127.0.0.31:0", get_status=lambda: docs["node-a"])
    b = await api_servers(listen="127.0.0.32:0", get_status=lambda: docs["node-b"])
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", "---\n".join([
        node_yaml("node-a", "127.0.0.31", free_port("127.0.0.31"), a.port),
        node_yaml("node-b", "127.0.0.32", free_port("127.0.0.32"), b.port),
        node_yaml("node-c", "127.0.0.33", free_port("127.0.0.33"), free_port("127.0.0.33"))]))
    repo.write("datasets.yaml", DATASETS)
    head = repo.commit("cluster")
    home = NodeHome("node-a", tmp_path / "node-a", repo.root).write_config()
    docs["node-a"] = doc("node-a", head, {"llama": ready()})
    docs["node-b"] = doc("node-b", head, {"llama": ready(), "shards": DatasetStatus(
        "Fetching", "v1", None, "c" * 64, bytes_total=200, bytes_done=50)})

    # the CLI is a subprocess; run it off the event loop so the servers can answer it
    r = await asyncio.to_thread(run_cli, "status", "--cluster", "--config", str(home.config),
                                timeout=60)
    assert r.returncode == 0, r.stderr
    assert "unreachable: connection refused" in row(r.stdout, "node-c")
    ra, rb = row(r.stdout, "node-a"), row(r.stdout, "node-b")
    assert f"{head[:12]} (current)" in ra and "Ready" in ra
    assert "Fetching 25%" in rb
    assert "2/3 nodes reachable, 0/2 datasets Ready" in r.stdout

    r = await asyncio.to_thread(run_cli, "status", "--cluster", "--json",
                                "--config", str(home.config), timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["revision"] == head
    assert sorted(out["nodes"]) == ["node-a", "node-b", "node-c"]
    assert out["nodes"]["node-a"] == {"api": f"127.0.0.31:{a.port}", "status": docs["node-a"],
                                      "error": None}
    assert out["nodes"]["node-c"]["status"] is None
    assert out["nodes"]["node-c"]["error"] == "connection refused"


async def test_cli_status_cluster_rejected_without_a_good_revision_exits_0(tmp_path: Path) -> None:
    """Issue 11 turned this around: `status` exits 0 (DESIGN §7), also during a rejected
    revision; with no good revision yet there is no inventory to ask."""
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", node_yaml("node-a", "127.0.0.34", 1, 2))
    repo.write("broken.yaml", "apiVersion: syncbit/v1\nkind: Dataset\nmetadata: {name: x}\n"
                              "spec: {version: v1, nonsense: 1}\n")
    repo.commit("broken")
    home = NodeHome("node-a", tmp_path / "node-a", repo.root).write_config()
    r = await asyncio.to_thread(run_cli, "status", "--cluster", "--config", str(home.config),
                                timeout=60)
    assert r.returncode == 0
    assert "rejected" in r.stderr and "broken.yaml" in r.stderr
    assert "no good revision yet" in r.stderr
    assert r.stdout == ""


async def test_cli_status_cluster_during_a_rejected_revision_shows_the_last_good_one(
        api_servers, tmp_path: Path) -> None:
    a = await api_servers(listen="127.0.0.35:0", get_status=lambda: None)
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", "---\n".join([
        node_yaml("node-a", "127.0.0.35", free_port("127.0.0.35"), a.port),
        node_yaml("node-b", "127.0.0.36", free_port("127.0.0.36"), free_port("127.0.0.36"))]))
    good = repo.commit("good")
    home = NodeHome("node-a", tmp_path / "node-a", repo.root).write_config()
    # A pass keeps the good revision in stateDir (nothing is placed: it converges at once).
    once = await asyncio.to_thread(run_cli, "--once", "--config", str(home.config), timeout=60)
    assert once.returncode == 0, once.stderr
    repo.write("broken.yaml", "apiVersion: syncbit/v1\nkind: Dataset\nmetadata: {name: x}\n"
                              "spec: {version: v1, nonsense: 1}\n")
    repo.commit("broken")
    r = await asyncio.to_thread(run_cli, "status", "--cluster", "--config", str(home.config),
                                timeout=60)
    assert r.returncode == 0, r.stderr
    assert "rejected" in r.stderr and "broken.yaml" in r.stderr
    assert f"last good revision {good}" in r.stderr
    assert "node-b" in r.stdout and "unreachable" in row(r.stdout, "node-b")
    r = await asyncio.to_thread(run_cli, "status", "--cluster", "--json", "--config",
                                str(home.config), timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout)["revision"] == good


async def test_cli_status_cluster_shows_unsatisfiable_placement(tmp_path: Path) -> None:
    """Issue 14: a warning line per placement the revision cannot satisfy, as `validate`."""
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", "---\n".join(
        node_yaml(n, ip, free_port(ip), free_port(ip), {"gpu": "h100"})
        for n, ip in (("node-a", "127.0.0.35"), ("node-b", "127.0.0.36"))))
    repo.write("datasets.yaml", dataset_yaml("five", {"file": {"path": "data/five"}},
                                             placement={"replicas": 5}))
    repo.commit("asks too much")
    home = NodeHome("node-a", tmp_path / "node-a", repo.root).write_config()
    r = await asyncio.to_thread(run_cli, "status", "--cluster", "--config", str(home.config),
                                timeout=60)
    assert r.returncode == 0, r.stderr
    [line] = [ln for ln in r.stdout.splitlines() if ln.startswith("warning: ")]
    assert line.startswith("warning: datasets.yaml:1:1: spec.placement.replicas: dataset five: "
                           "replicas: 5 cannot be satisfied: 2 of 5 replicas placed")
    r = await asyncio.to_thread(run_cli, "status", "--cluster", "--json", "--config",
                                str(home.config), timeout=60)
    assert json.loads(r.stdout)["warnings"] == [line.removeprefix("warning: ")]


def test_split_datasets_show_the_files_short_of_their_copies() -> None:
    """`status --cluster` per split dataset: files with fewer than K copies on nodes where the
    desired version is Ready (adapters/cluster_view.py `split_summary`)."""
    import dataclasses

    from reconciler.app.cluster import cluster_json, split_lines
    from reconciler.core.split import holders
    from reconciler.model.desired import LockFile

    files = tuple((f"f{i}", 10) for i in range(8))
    d = dataclasses.replace(dataset("sp", split=2), lock=LockFile(
        "locks/sp.torrent", "c" * 64, "c" * 40, "sp", 80, files))
    st = state([node("na", 1), node("nb", 2), node("nc", 3)], [d, dataset("whole")])
    up = {n: {"status": doc(n, REV_A, {"sp": ready(30)})} for n in ("na", "nb", "nc")}
    assert split_lines(up, st) == ["split sp: 0/8 files with fewer than 2 copies"]
    down = {**up, "nc": {"error": "connection refused"}}
    short = sum(1 for f, _ in files if "nc" in holders("sp", f, ["na", "nb", "nc"], 2))
    assert short > 0
    assert split_lines(down, st) == [f"split sp: {short}/8 files with fewer than 2 copies"]
    assert cluster_json(down, st)["split"] == {"sp": {"copies": 2, "files": 8,
                                                      "filesShort": short}}
