"""Placement for real fleets (issue 14), end to end with real processes: a cordoned node gets
no new replica and drains what it held; `matchExpressions` (NotIn, DoesNotExist) in `plan` on
several nodes; unsatisfiable placement in `validate`, `plan` and the status; a node holding an
unlocked dataset's torrent places like a node that does not."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from harness import (NodeHome, StateRepo, dataset_yaml, http_source, nodes_yaml, pseudo_random,
                     run_cli, write_data)
from origin_server import OriginServer
from reconciler.core.placement import rank_nodes

ROOT = Path(__file__).resolve().parents[1]
STATUS_SCHEMA = json.loads((ROOT / "schemas" / "status.schema.json").read_text())

BIG = {"a.bin": pseudo_random(700_000, "a"), "b.bin": pseudo_random(333_333, "b")}
SMALL = {"c.bin": pseudo_random(150_000, "c")}


@pytest.fixture
def origin(tmp_path):
    server = OriginServer(write_data(tmp_path / "origin", {**BIG, **SMALL})).start()
    yield server
    server.stop()


def cordon(inventory: str, node: str) -> str:
    docs = inventory.split("---\n")
    return "---\n".join(d + "  cordoned: true\n" if f"  name: {node}\n" in d else d
                        for d in docs)


def plan_json(home: NodeHome) -> dict:
    res = home.run("plan", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout)


def fetches(home: NodeHome) -> set[str]:
    return {a["dataset"] for a in plan_json(home)["actions"] if a["action"] == "fetch"}


def test_a_cordoned_node_gets_no_new_replica_and_drains_what_it_held(tmp_path, origin):
    names = ["n1", "n2", "n3"]
    ranked = rank_nodes("w", names)
    top, second = ranked[0], ranked[1]
    repo = StateRepo.create(tmp_path / "state")
    inventory = nodes_yaml(names)
    repo.write("nodes.yaml", inventory)
    repo.write("w.yaml", dataset_yaml("w", http_source(origin.url, SMALL),
                                      placement={"replicas": 1}))
    assert repo.lock().returncode == 0
    repo.commit("w on one node")
    homes = {n: NodeHome(n, tmp_path / n, repo.root).write_config() for n in names}
    assert fetches(homes[top]) == {"w"} and fetches(homes[second]) == set()
    res = homes[top].once()
    assert res.returncode == 0, res.stdout + res.stderr
    assert homes[top].status()["datasets"]["w"]["phase"] == "Ready"

    # Cordon the node holding it, and add a dataset for every node.
    repo.write("nodes.yaml", cordon(inventory, top))
    repo.write("every.yaml", dataset_yaml("every", http_source(origin.url, SMALL),
                                          placement={"all": True}))
    assert repo.lock().returncode == 0
    repo.commit(f"cordon {top}")
    assert fetches(homes[second]) == {"w", "every"}  # the next-ranked node takes w over
    assert fetches(homes[ranked[2]]) == {"every"}
    assert fetches(homes[top]) == set()  # no new replica: not even of an all: true dataset
    sent = origin.bytes_sent
    res = homes[top].once()
    assert res.returncode == 0, res.stdout + res.stderr
    doc = homes[top].status()
    jsonschema.Draft202012Validator(STATUS_SCHEMA).validate(doc)
    assert doc["datasets"]["w"]["phase"] == "Draining"  # seeded during gracePeriod
    assert (homes[top].data / "w").is_symlink()
    assert "every" not in doc["datasets"]
    assert origin.bytes_sent == sent  # fetched nothing


def test_not_in_and_does_not_exist_selectors_in_plan(tmp_path, origin):
    names = ["h1", "h2", "h3", "a1"]
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", nodes_yaml(
        names, h1={"gpu": "h100", "rack": "r1", "role": "coordinator"},
        h2={"gpu": "h100", "rack": "r1"}, h3={"gpu": "h100", "rack": "r2"},
        a1={"gpu": "a100", "rack": "r2"}))
    repo.write("d.yaml", dataset_yaml(
        "far-from-coordinator", http_source(origin.url, SMALL),
        placement={"all": True, "selector": {"gpu": "h100", "matchExpressions": [
            {"key": "rack", "operator": "NotIn", "values": ("r1",)}]}})
        + "---\n" + dataset_yaml(
        "workers", http_source(origin.url, SMALL), path="workers",
        placement={"all": True, "selector": {"matchExpressions": [
            {"key": "role", "operator": "DoesNotExist"}]}}))
    res = run_cli("validate", str(repo.root))
    assert res.returncode == 0 and "warning" not in res.stderr, res.stdout + res.stderr
    repo.commit("selectors")
    homes = {n: NodeHome(n, tmp_path / n, repo.root).write_config() for n in names}
    got = {n: fetches(h) for n, h in homes.items()}
    assert got == {"h1": set(), "h2": {"workers"}, "h3": {"far-from-coordinator", "workers"},
                   "a1": {"workers"}}


def test_unsatisfiable_placement_in_validate_plan_and_status(tmp_path, origin):
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", nodes_yaml(["h1", "a1"], h1={"gpu": "h100"}, a1={"gpu": "a100"}))
    repo.write("d.yaml", dataset_yaml("five", http_source(origin.url, SMALL),
                                      placement={"replicas": 5})
               + "---\n" + dataset_yaml("pinned", http_source(origin.url, SMALL), path="p",
                                        placement={"nodes": ("a1",),
                                                   "selector": {"gpu": "h100"}}))
    assert repo.lock().returncode == 0
    repo.commit("asks too much")

    res = run_cli("validate", str(repo.root))
    assert res.returncode == 0, res.stdout + res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("warning: ")]
    assert len(lines) == 2, res.stderr
    assert "d.yaml:1:1: spec.placement.replicas: dataset five: replicas: 5 cannot be " \
           "satisfied: 2 of 5 replicas placed" in lines[0]
    assert "spec.placement.selector: dataset pinned: selector {gpu: h100} is ignored next to " \
           "nodes:" in lines[1] and "it would not match a1" in lines[1]

    home = NodeHome("a1", tmp_path / "a1", repo.root).write_config()
    res = home.run("plan")
    assert res.returncode == 0
    assert [ln for ln in res.stderr.splitlines() if ln.startswith("warning: ")] == lines
    assert [w for w in plan_json(home)["warnings"]] == [ln.removeprefix("warning: ")
                                                        for ln in lines]

    res = home.once()
    assert res.returncode == 0, res.stdout + res.stderr  # placed what it could: converged
    doc = home.status()
    jsonschema.Draft202012Validator(STATUS_SCHEMA).validate(doc)
    cond = {c["type"]: c for c in doc["conditions"]}
    assert cond["Ready"]["status"] == "True"
    placement = cond["PlacementSatisfied"]
    assert (placement["status"], placement["reason"]) == ("False", "PlacementUnsatisfiable")
    assert "dataset five: replicas: 5 cannot be satisfied" in placement["message"]
    assert "dataset pinned: selector" in placement["message"]


def test_a_node_holding_an_unlocked_torrent_places_like_one_that_does_not(tmp_path, origin):
    """n1 pins the unlocked dataset (it holds its torrent); n2 never saw it. With a capacity
    that fits the locked dataset but not both, n1 counting the pinned torrent's bytes would
    push the locked dataset off n1 in n1's eyes only. Sizes come from git: both agree."""
    later = next(n for n in (f"later-{i}" for i in range(50))
                 if rank_nodes(n, ["n1", "n2"])[0] == "n1")
    repo = StateRepo.create(tmp_path / "state")
    inventory = nodes_yaml(["n1", "n2"]).replace(
        "  api:", "  capacity: 1100000\n  api:")
    repo.write("nodes.yaml", inventory)
    repo.write("u.yaml", dataset_yaml("unlocked", http_source(origin.url, BIG),
                                      placement={"nodes": ("n1",)}, extra="  priority: critical\n"))
    repo.commit("an unlocked dataset on n1")
    n1 = NodeHome("n1", tmp_path / "n1", repo.root).write_config()
    n2 = NodeHome("n2", tmp_path / "n2", repo.root).write_config()
    res = n1.once()
    assert res.returncode == 0, res.stdout + res.stderr
    assert n1.status()["datasets"]["unlocked"]["phase"] == "Ready"
    assert any((n1.state_dir / "metadata").iterdir())  # n1 holds the torrent it pinned

    repo.write("l.yaml", dataset_yaml(later, http_source(origin.url, SMALL), path="later",
                                      placement={"replicas": 1}, extra="  priority: low\n"))
    assert repo.lock(later).returncode == 0
    repo.commit("a locked dataset, ranked first on n1")
    assert fetches(n1) == {later}  # the holder places it on itself...
    assert fetches(n2) == set()  # ...and so does the other node, which never held it


def test_a_cordoned_node_seeds_its_replica_to_the_next_ranked_node(tmp_path, origin, daemons):
    """Daemons: the node holding the only replica is cordoned; the next-ranked node takes the
    replica over and gets every byte from the cordoned node, which drains (origin gone)."""
    names = ["c1", "c2", "c3"]
    ranked = rank_nodes("held", names)
    repo = StateRepo.create(tmp_path / "state")
    inventory = nodes_yaml(names, first_ip=171)
    repo.write("nodes.yaml", inventory)
    repo.write("held.yaml", dataset_yaml("held", http_source(origin.url, BIG),
                                         placement={"replicas": 1}))
    assert repo.lock().returncode == 0
    repo.commit("one replica")
    homes = {n: NodeHome(n, tmp_path / n, repo.root).write_config() for n in names}
    top = daemons(homes[ranked[0]])
    top.wait_phase("held", "Ready", repo.head(), timeout=90)

    repo.write("nodes.yaml", cordon(inventory, ranked[0]))
    rev = repo.commit(f"cordon {ranked[0]}")
    top.wait_phase("held", "Draining", rev, timeout=60)
    origin.root.rename(tmp_path / "origin-gone")  # peers are the only source from here on
    try:
        nxt = daemons(homes[ranked[1]])
        doc = nxt.wait_phase("held", "Ready", rev, timeout=90)
    finally:
        (tmp_path / "origin-gone").rename(origin.root)
    held = doc["datasets"]["held"]
    total = sum(map(len, BIG.values()))
    assert held["bytesFromOrigin"] == 0
    assert held["bytesFromPeers"] >= total  # whole pieces, pad bytes included
    assert top.phase("held") == "Draining"
