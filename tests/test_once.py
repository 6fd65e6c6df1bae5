"""`syncbit-reconcile --once` end to end: a real git state repo, a real HTTP origin, a real
libtorrent session in a subprocess, the real store on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jsonschema
import pytest

from harness import (NodeHome, StateRepo, dataset_yaml, http_source, nodes_yaml, pseudo_random,
                     tree_digest, write_data)
from origin_server import OriginServer

ROOT = Path(__file__).resolve().parents[1]
STATUS_SCHEMA = json.loads((ROOT / "schemas" / "status.schema.json").read_text())

HTTP_FILES = {"weights/model-00001.safetensors": pseudo_random(700_000, "w1"),
              "weights/model-00002.safetensors": pseudo_random(333_333, "w2"),
              "config.json": b'{"hidden": 64}\n'}
LOCAL_FILES = {"shard-0.jsonl": pseudo_random(150_000, "s0"), "README": b"eval shards\n"}


@pytest.fixture
def origin(tmp_path):
    root = write_data(tmp_path / "origin", HTTP_FILES)
    server = OriginServer(root).start()
    yield server
    server.stop()


def datasets_yaml(origin_url: str, local: Path, version: str = "v1", extra: str = "") -> str:
    """An http dataset on every node and a file dataset on n1 (its path is fixed up later)."""
    return (dataset_yaml("llm-weights", http_source(origin_url, HTTP_FILES), version=version,
                         path="models/llm", extra=extra)
            + "---\n"
            + dataset_yaml("eval-shards", {"file": {"path": str(local)}}, version="1",
                           placement={"nodes": ("n1",)}, path="/placeholder/eval"))


@pytest.fixture
def cluster(tmp_path, origin):
    """A one-node cluster whose state repo declares an http and a file dataset, locked."""
    local = write_data(tmp_path / "local-src", LOCAL_FILES)
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", nodes_yaml(["n1", "n2"]))
    # The file dataset lies outside the state repo: this node may publish from there.
    home = NodeHome("n1", tmp_path / "n1", repo.root,
                    {"publishRoots": [str(local)]}).write_config()
    repo.write("datasets.yaml", datasets_yaml(origin.url, local).replace(
        "/placeholder", str(home.data)))
    res = repo.lock()
    assert res.returncode == 0, res.stderr
    repo.commit("initial")
    origin.bytes_sent = 0  # count only what the node fetches from here on
    return repo, home, local


def assert_status_valid(doc: dict) -> None:
    jsonschema.Draft202012Validator(STATUS_SCHEMA).validate(doc)


def test_fresh_node_converges_http_and_file_datasets(cluster, origin):
    repo, home, local = cluster
    res = home.once()
    assert res.returncode == 0, res.stdout + res.stderr

    llm = home.data / "models" / "llm"
    assert llm.is_symlink()
    assert tree_digest(llm) == tree_digest(origin.root)
    assert tree_digest(home.data / "eval") == tree_digest(local)
    assert Path(os.readlink(llm)).is_relative_to(home.state_dir / "store")

    doc = home.status()
    assert_status_valid(doc)
    assert doc["lastAppliedRevision"] == doc["observedRevision"] == repo.head()
    assert doc["lastPass"]["result"] == "Converged"
    assert doc["rejected"] is None
    ready = {c["type"]: c["status"] for c in doc["conditions"]}
    assert ready == {"Ready": "True", "Reconciling": "False", "Stalled": "False",
                     "PlacementSatisfied": "True"}
    size = sum(map(len, HTTP_FILES.values()))
    d = doc["datasets"]["llm-weights"]
    assert (d["phase"], d["bytesTotal"], d["bytesDone"], d["path"]) == ("Ready", size, size, str(llm))
    assert d["bytesFromOrigin"] == size
    assert len(d["infoHash"]) == 64
    assert doc["datasets"]["eval-shards"]["phase"] == "Ready"
    # The origin sent each byte once to the node (HEAD requests carry no body).
    assert origin.bytes_sent == size
    prom = (home.state_dir / "syncbit.prom").read_text()
    assert 'syncbit_dataset_phase{dataset="llm-weights",node="n1",phase="Ready"} 1.0' in prom
    assert "Ready" in res.stdout and "llm-weights" in res.stdout


def test_second_pass_downloads_nothing(cluster, origin):
    repo, home, _ = cluster
    assert home.once().returncode == 0
    sent = origin.bytes_sent
    requests = len(origin.requests)
    res = home.once()
    assert res.returncode == 0, res.stderr
    assert origin.bytes_sent == sent and len(origin.requests) == requests
    plan = home.run("plan", "--json")
    assert plan.returncode == 0
    assert json.loads(plan.stdout)["actions"] == []


def test_new_version_is_fetched_and_switched_old_one_kept_then_evicted(cluster, origin, tmp_path):
    repo, home, local = cluster
    assert home.once().returncode == 0
    llm = home.data / "models" / "llm"
    first_target = os.readlink(llm)

    for n, version in enumerate(("v2", "v3"), start=2):
        (origin.root / "config.json").write_bytes(f'{{"hidden": {64 * n}}}\n'.encode())
        repo.write("datasets.yaml", datasets_yaml(origin.url, local, version).replace(
            "/placeholder", str(home.data)))
        assert repo.lock().returncode == 0
        repo.commit(version)
        res = home.once()
        assert res.returncode == 0, res.stderr
        assert tree_digest(llm) == tree_digest(origin.root)
        assert home.status()["datasets"]["llm-weights"]["version"] == version

    store = home.state_dir / "store" / "llm-weights"
    kept = sorted(p.name for p in store.iterdir() if p.is_dir())
    assert len(kept) == 2  # v3 active + v2 kept (keepVersions: 1); v1 evicted
    assert not Path(first_target).exists()


def test_broken_commit_is_rejected_and_deletes_nothing(cluster):
    repo, home, _ = cluster
    assert home.once().returncode == 0
    good = repo.head()
    before = tree_digest(home.data / "models" / "llm")

    repo.write("datasets.yaml", (repo.root / "datasets.yaml").read_text().replace(
        "placement:\n    all: true", "placement:\n    all: true\n    replicas: 0\n  bogus: 1"))
    bad = repo.commit("broken")
    res = home.once()
    assert res.returncode == 3, res.stdout + res.stderr
    doc = home.status()
    assert_status_valid(doc)
    assert doc["observedRevision"] == bad
    assert doc["lastAppliedRevision"] == good
    assert doc["lastPass"]["result"] == "Rejected"
    errors = doc["rejected"]["errors"]
    assert doc["rejected"]["revision"] == bad
    assert {e["file"] for e in errors} == {"datasets.yaml"}
    assert any(e["field"] == "spec.bogus" and e["line"] == 17 for e in errors), errors
    assert tree_digest(home.data / "models" / "llm") == before
    assert "datasets.yaml:" in res.stdout  # the summary shows where


def test_dataset_removed_from_this_node_drains_then_is_evicted(cluster, origin, tmp_path):
    repo, home, local = cluster
    assert home.once().returncode == 0
    text = (repo.root / "datasets.yaml").read_text().replace("nodes: [n1]", "nodes: [n2]")
    repo.write("datasets.yaml", text)
    repo.commit("move eval-shards to n2")

    res = home.once()  # default gracePeriod 10m: still there, Draining
    assert res.returncode == 0, res.stderr
    assert home.status()["datasets"]["eval-shards"]["phase"] == "Draining"
    assert (home.data / "eval").is_symlink()

    home.extra["gracePeriod"] = "0s"
    home.write_config()
    assert home.once().returncode == 0
    assert "eval-shards" not in home.status()["datasets"]
    assert not (home.data / "eval").exists()
    assert not (home.state_dir / "store" / "eval-shards").exists()
    assert home.status()["datasets"]["llm-weights"]["phase"] == "Ready"


def test_unreachable_origin_times_out_not_ready(cluster, origin):
    repo, home, _ = cluster
    for f in HTTP_FILES:
        (origin.root / f).unlink()  # the origin now answers 404
    res = home.once("--timeout", "6")
    assert res.returncode == 1, res.stdout + res.stderr
    d = home.status()["datasets"]["llm-weights"]
    # Given up at --timeout: Failed with the reason and the origin's last error (issue 11).
    assert d["phase"] == "Failed"
    assert d["error"] and "404" in d["error"] and "--timeout 6s" in d["error"]
    assert not (home.data / "models" / "llm").exists()
    assert home.status()["lastPass"]["result"] == "Failed"


def test_node_missing_from_inventory_acts_on_nothing(cluster):
    repo, home, _ = cluster
    assert home.once().returncode == 0
    repo.write("nodes.yaml", nodes_yaml(["n2"]))
    repo.write("datasets.yaml", (repo.root / "datasets.yaml").read_text().replace(
        "nodes: [n1]", "nodes: [n2]"))
    repo.commit("n1 removed from inventory")
    res = home.once()
    assert res.returncode == 1
    assert "no Node document" in res.stderr
    assert (home.data / "models" / "llm").is_symlink()


def test_killed_mid_download_resumes_without_refetching(tmp_path):
    size = 6 << 20
    root = write_data(tmp_path / "origin", {"big.bin": pseudo_random(size, "big")})
    server = OriginServer(root, rate=2 << 20).start()
    try:
        repo = StateRepo.create(tmp_path / "state")
        repo.write("nodes.yaml", nodes_yaml(["n1"]))
        repo.write("ds.yaml", dataset_yaml("big", {"http": {"urls": (f"{server.url}/big.bin",)}}))
        assert repo.lock().returncode == 0
        repo.commit()
        locked = server.bytes_sent
        # One origin stream: what the origin sent is then what libtorrent received, in order.
        # (With many, the parts read ahead of the one being relayed are lost with the process.)
        home = NodeHome("n1", tmp_path / "n1", repo.root,
                        {"originConnections": 1}).write_config()
        proc = home.start_once()
        try:
            deadline = time.monotonic() + 60
            while server.bytes_sent - locked < size // 3 and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        first = server.bytes_sent - locked
        killed = (home.base / "once.log").read_text()
        assert 0 < first < size, killed
        # The node is the version's only target: it was reading the source directly, writing
        # each chunk in place as it arrived (engine/direct_read.py).
        assert '"direct": true' in killed, killed
        res = home.once()
        assert res.returncode == 0, res.stderr
        assert tree_digest(home.data / "big") == {"big.bin": tree_digest(root)["big.bin"]}
        refetched = server.bytes_sent - locked - first
        # What was on disk before the kill is not fetched again: the second run's libtorrent
        # checks it and fetches less than the whole file (bytes in flight at the kill repeat).
        assert refetched < size - first // 2, (first, refetched)
    finally:
        server.stop()


def test_plan_on_six_nodes_names_the_replicas_on_the_top_two(tmp_path, origin):
    from reconciler.core.placement import rank_nodes

    names = [f"gpu-{i:02d}" for i in range(1, 7)]
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", nodes_yaml(names))
    repo.write("ds.yaml", dataset_yaml("weights", http_source(origin.url, ["config.json"]),
                                       placement={"replicas": 2}))
    assert repo.lock().returncode == 0
    repo.commit()
    acting = set()
    for n in names:
        home = NodeHome(n, tmp_path / n, repo.root).write_config()
        res = home.run("plan", "--json")
        assert res.returncode == 0, res.stderr
        plan = json.loads(res.stdout)
        assert plan["revision"] == repo.head()
        if plan["actions"]:
            assert [(a["action"], a["dataset"]) for a in plan["actions"]] == [("fetch", "weights")]
            acting.add(n)
        human = home.run("plan")
        assert ("weights" in human.stdout) == (n in acting)
    assert acting == set(rank_nodes("weights", names)[:2])


def test_origin_bandwidth_cap_still_converges(cluster, origin):
    """`bandwidth.origin` goes through the gateway's token bucket (its arithmetic is unit-tested
    with a fake clock in tests/executor/test_ratelimit.py); here: wired in, data exact."""
    repo, home, local = cluster
    home.extra["bandwidth"] = {"origin": "2MiB"}
    home.write_config()
    res = home.once()
    assert res.returncode == 0, res.stderr
    assert tree_digest(home.data / "models" / "llm") == tree_digest(origin.root)


def test_timeout_is_a_hard_limit_against_a_hung_origin(cluster, origin):
    """The origin answers, sends 1 KiB and then nothing: `--timeout` still ends the run, with
    the dataset Failed and its reason in the status, not Fetching forever."""
    repo, home, _ = cluster
    origin.hang = True
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", "--once", "--config",
                             str(home.config), "--timeout", "5"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=90)  # a bound for the test, not an assertion on time
    finally:
        proc.kill()
    print(f"--timeout 5 exited after {time.monotonic() - started:.1f}s")
    assert proc.returncode == 1, out
    d = home.status()["datasets"]["llm-weights"]
    assert d["phase"] == "Failed", d
    assert "--timeout" in d["error"], d
    assert home.status()["lastPass"]["result"] == "Failed"
    assert not (home.data / "models" / "llm").exists()


def test_a_file_source_outside_publish_roots_is_refused(tmp_path, origin):
    """A committer names /etc/hostname: the node reads nothing, serves nothing, and says why."""
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", nodes_yaml(["n1"], first_ip=121))
    repo.write("ds.yaml", dataset_yaml("secrets", {"file": {"path": "/etc/hostname"}},
                                       placement={"nodes": ("n1",)}))
    repo.commit("steal")
    home = NodeHome("n1", tmp_path / "n1", repo.root).write_config()
    res = home.once("--timeout", "60", "--linger", "0")
    assert res.returncode == 1, res.stdout + res.stderr
    d = home.status()["datasets"]["secrets"]
    assert d["phase"] == "Failed" and "outside this node's publishRoots" in d["error"], d
    assert not (home.data / "secrets").exists()
    stored = [p for p in home.state_dir.rglob("*") if p.is_file() and p.name == "hostname"]
    assert stored == []


def test_data_mode_and_group_keep_stored_data_private(cluster):
    """dataMode 0640 + dataGroup: the group's members read the data, other users do not."""
    repo, home, local = cluster
    home.extra.update(dataMode="0640", dataGroup=65534)
    home.write_config()
    res = home.once("--timeout", "60")
    assert res.returncode == 0, res.stdout + res.stderr
    served = home.data / "models" / "llm"
    files = [p for p in served.resolve().rglob("*") if p.is_file()]
    # dataMode minus the write bits: stored files are read-only (one inode may back many
    # versions, see tests/test_store_dedup.py)
    assert files and all(p.stat().st_mode & 0o777 == 0o440 for p in files)
    assert all(p.stat().st_gid == 65534 for p in files)
    assert served.resolve().stat().st_mode & 0o777 == 0o750
    tmp = Path(tempfile.gettempdir())
    for d in [*served.resolve().parents, *served.parents]:  # pytest's tmp dirs are 0700
        if d.is_relative_to(tmp) and d != tmp and d.stat().st_mode & 0o001 == 0:
            d.chmod(d.stat().st_mode | 0o001)  # others may traverse, not list
    member = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat",
              str(served / "config.json")]
    assert subprocess.run(member, capture_output=True).stdout == HTTP_FILES["config.json"]
    stranger = ["setpriv", "--reuid=65533", "--regid=65533", "--clear-groups", "cat",
                str(served / "config.json")]
    assert subprocess.run(stranger, capture_output=True).returncode != 0
