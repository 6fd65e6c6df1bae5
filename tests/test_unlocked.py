"""Datasets without spec.lock, end to end: the first-ranked target node builds the torrent
while reading the source once, the others fetch it from its API and the bytes from the swarm."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import jsonschema
import pytest
from aiohttp import web

from harness import (Daemon, NodeHome, StateRepo, dataset_yaml, http_source, nodes_yaml,
                     pseudo_random, tree_digest, until, wait_all, write_data)
from origin_server import OriginServer
from threaded_server import ThreadedServer
from reconciler.desired.validate import load_desired_state
from reconciler.core.pinning import metadata_key
from reconciler.core.placement import rank_nodes
from reconciler.torrent.hybrid import FileHasher, build_torrent, choose_piece_size, read_lock

ROOT = Path(__file__).resolve().parents[1]
STATUS_SCHEMA = json.loads((ROOT / "schemas" / "status.schema.json").read_text())
FILES = {"model-00001.safetensors": pseudo_random(1_500_000, "u1"),
         "model-00002.safetensors": pseudo_random(1_234_567, "u2"),
         "config.json": b'{"layers": 2}\n'}
TOTAL = sum(map(len, FILES.values()))
NAMES = ["u1", "u2", "u3"]


def weights_yaml(url: str, version: str = "v1") -> str:
    return dataset_yaml("weights", http_source(url, FILES), version=version, path="models/weights")


@pytest.fixture
def origin(tmp_path):
    server = OriginServer(write_data(tmp_path / "origin", FILES)).start()
    yield server
    server.stop()


def make_cluster(tmp_path: Path, origin: OriginServer, first_ip: int
                 ) -> tuple[StateRepo, list[NodeHome]]:
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", nodes_yaml(NAMES, first_ip=first_ip))
    repo.write("datasets.yaml", weights_yaml(origin.url))
    repo.commit("unlocked dataset")
    homes = [NodeHome(n, tmp_path / n, repo.root).write_config() for n in NAMES]
    return repo, homes


def logs(homes: list[NodeHome]) -> str:
    return "\n".join(f"== {h.name}\n" + (h.base / "once.log").read_text()[-4000:] for h in homes)


def assert_converged(homes: list[NodeHome]) -> str:
    """Every node Ready with the origin's bytes under the same info-hash; returns it."""
    hashes = set()
    for h in homes:
        doc = h.status()
        jsonschema.Draft202012Validator(STATUS_SCHEMA).validate(doc)
        d = doc["datasets"]["weights"]
        assert d["phase"] == "Ready", (h.name, d)
        assert (d["bytesTotal"], d["bytesDone"]) == (TOTAL, TOTAL)
        assert tree_digest(h.data / "models" / "weights") == tree_digest(
            h.base.parent / "origin")
        hashes.add(d["infoHash"])
    assert len(hashes) == 1 and None not in hashes
    return hashes.pop()


def test_three_nodes_converge_reading_the_source_once(tmp_path, origin):
    repo, homes = make_cluster(tmp_path, origin, 171)
    before = {p: p.read_bytes() for p in repo.root.rglob("*") if p.is_file() and ".git" not in p.parts}
    codes = wait_all([h.start_once() for h in homes])
    assert codes == [0, 0, 0], logs(homes)
    ih = assert_converged(homes)

    # One node read the source (to hash and keep it); the others took the bytes from the swarm.
    assert origin.bytes_sent <= 1.25 * TOTAL, (origin.bytes_sent, TOTAL, logs(homes))
    builder = rank_nodes("weights", NAMES)[0]
    assert f'"node": "{builder}"' in next(
        (h.base / "once.log").read_text() for h in homes if h.name == builder)
    built = [h.name for h in homes if "metadata built" in (h.base / "once.log").read_text()]
    fetched = [h.name for h in homes if "metadata fetched" in (h.base / "once.log").read_text()]
    assert built == [builder] and sorted(fetched) == sorted(set(NAMES) - {builder}), logs(homes)
    # The builder hashed every byte as it wrote it: it seeds what it built without having
    # libtorrent hash it all again; the others download and check as usual.
    seeded_as_built = [h.name for h in homes
                       if '"built_here": true' in (h.base / "once.log").read_text()]
    assert seeded_as_built == [builder], logs(homes)

    # Every node keeps the same torrent; the state repo was not touched.
    state = load_desired_state(repo.root, "x", require_locks=False)
    key = metadata_key(state.datasets["weights"])
    torrents = {(h.state_dir / "metadata" / "weights" / f"{key}.torrent").read_bytes()
                for h in homes}
    assert len(torrents) == 1 and read_lock(torrents.pop(), "t").info_hash == ih
    assert {p: p.read_bytes() for p in repo.root.rglob("*")
            if p.is_file() and ".git" not in p.parts} == before

    # A second pass is a no-op: nothing built, fetched or downloaded again.
    origin.bytes_sent = 0
    res = homes[0].once("--timeout", "30")
    assert res.returncode == 0, res.stderr
    assert origin.bytes_sent == 0
    assert "metadata built" not in res.stderr and "metadata fetched" not in res.stderr

    # Locking it later pins the very same torrent: nothing is downloaded again.
    assert repo.lock().returncode == 0
    assert read_lock((repo.root / "locks" / "weights.torrent").read_bytes(), "t").info_hash == ih
    repo.commit("locked")
    origin.bytes_sent = 0
    res = homes[0].once("--timeout", "30")
    assert res.returncode == 0, res.stderr
    assert origin.bytes_sent == 0 and homes[0].status()["datasets"]["weights"]["infoHash"] == ih


def test_the_next_node_builds_when_the_first_ranked_is_down(tmp_path, origin):
    repo, homes = make_cluster(tmp_path, origin, 174)
    first = rank_nodes("weights", NAMES)[0]
    running = [h for h in homes if h.name != first]
    codes = wait_all([h.start_once() for h in running])
    assert codes == [0, 0], logs(running)
    assert_converged(running)
    assert origin.bytes_sent <= 1.25 * TOTAL, (origin.bytes_sent, logs(running))
    second = rank_nodes("weights", NAMES)[1]
    log_of = {h.name: (h.base / "once.log").read_text() for h in running}
    assert "metadata built" in log_of[second] and "no node ranked above builds it" in log_of[second]

    # The first-ranked node comes back: it takes the torrent from a peer instead of
    # building another one, and pulls its bytes from the peers (that linger to seed).
    late = next(h for h in homes if h.name == first)
    origin.bytes_sent = 0
    procs = [late.start_once(timeout=60)] + [h.start_once(timeout=60) for h in running]
    codes = wait_all(procs)
    assert codes == [0, 0, 0], logs(homes)
    assert_converged(homes)
    assert "metadata fetched" in (late.base / "once.log").read_text()
    assert origin.bytes_sent <= 0.25 * TOTAL, (origin.bytes_sent, logs(homes))


def test_source_error_fails_the_dataset_and_keeps_what_is_there(tmp_path, origin):
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", nodes_yaml(["u1"], first_ip=177))
    repo.write("datasets.yaml", weights_yaml(origin.url).replace(
        "config.json", "missing.json"))
    repo.commit("a file the origin does not have")
    home = NodeHome("u1", tmp_path / "u1", repo.root).write_config()
    res = home.once("--timeout", "60")
    assert res.returncode == 1, res.stderr
    d = home.status()["datasets"]["weights"]
    assert d["phase"] == "Failed" and d["infoHash"] is None
    assert "building the torrent from the http source" in d["error"]
    assert "missing.json" in d["error"]
    assert not (home.state_dir / "metadata" / "weights").exists() or not any(
        (home.state_dir / "metadata" / "weights").iterdir())
    staging = home.state_dir / "staging"
    assert not staging.exists() or not any(p.is_file() for p in staging.rglob("*"))


def test_daemon_serves_the_torrent_to_peers_and_nothing_else(tmp_path, origin):
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", nodes_yaml(["u1"], first_ip=178))
    repo.write("datasets.yaml", weights_yaml(origin.url))
    repo.commit("unlocked")
    home = NodeHome("u1", tmp_path / "u1", repo.root).write_config()
    api = load_desired_state(repo.root, "x", require_locks=False).nodes["u1"].api
    key = metadata_key(load_desired_state(repo.root, "x", require_locks=False).datasets["weights"])
    daemon = Daemon(home)
    try:
        until(lambda: home.status_file.exists() and
              home.status()["datasets"].get("weights", {}).get("phase") == "Ready",
              60, "weights Ready")

        def get(path: str) -> tuple[int, str, bytes]:
            try:
                with urllib.request.urlopen(f"http://{api}{path}", timeout=5) as r:
                    return r.status, r.headers["Content-Type"], r.read()
            except urllib.error.HTTPError as e:
                return e.code, e.headers["Content-Type"], e.read()

        status, ctype, body = get(f"/v1/metadata/weights/{key}")
        assert (status, ctype) == (200, "application/x-bittorrent")
        assert body == (home.state_dir / "metadata" / "weights" / f"{key}.torrent").read_bytes()
        assert read_lock(body, "t").info_hash == home.status()["datasets"]["weights"]["infoHash"]
        for path in (f"/v1/metadata/weights/{'0' * 32}", "/v1/metadata/other/" + key,
                     "/v1/metadata/..%2F..%2Fetc/passwd"):
            status, _, body = get(path)
            assert status == 404 and json.loads(body)["state"] == "unknown", path
    finally:
        daemon.stop()


def test_token_protected_origin_two_nodes_and_the_token_stays_inside(tmp_path):
    token = "tok-unlocked-7d1e0b55c3a94f28-secret"
    server = OriginServer(write_data(tmp_path / "origin", FILES), token=token).start()
    try:
        repo = StateRepo.create(tmp_path / "state")
        repo.write("nodes.yaml", nodes_yaml(["u1", "u2"], first_ip=179))
        repo.write("datasets.yaml", weights_yaml(server.url).replace(
            "  placement:", "      headers: {Authorization: \"Bearer ${ORIGIN_TOKEN}\"}\n"
                            "  placement:"))
        repo.commit("unlocked, token-protected")
        homes = [NodeHome(n, tmp_path / n, repo.root).write_config() for n in ("u1", "u2")]
        procs = [h.start_once(env={"ORIGIN_TOKEN": token}, level="debug") for h in homes]
        codes = wait_all(procs)
        assert codes == [0, 0], logs(homes)
        assert_converged(homes)
        assert server.bytes_sent <= 1.25 * TOTAL
        needle = token.encode()
        for root in (repo.root, *(h.base for h in homes)):
            for p in root.rglob("*"):
                if p.is_file() and not p.is_symlink():
                    assert needle not in p.read_bytes(), f"token found in {p}"
    finally:
        server.stop()


class HostilePeer(ThreadedServer):
    """A node's API that answers every `/v1/metadata/...` with the same torrent: bytes of its
    own choosing under the dataset's name, file names and sizes. Counts the requests."""

    def __init__(self, host: str, port: int, torrent: bytes) -> None:
        super().__init__()
        self.host, self.port, self.torrent, self.asked = host, port, torrent, 0

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/metadata/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def _handle(self, request: web.Request) -> web.Response:
        self.asked += 1
        return web.Response(body=self.torrent, content_type="application/x-bittorrent")


def forged_torrent(base_url: str) -> bytes:
    """The dataset's name, files and sizes, source and revision keys, but other bytes (and an
    ETag the attacker made up)."""
    evil = {p: pseudo_random(len(d), "evil-" + p) for p, d in FILES.items()}
    ps = choose_piece_size(TOTAL)
    hashed = []
    for p, data in sorted(evil.items()):
        h = FileHasher(ps)
        h.update(data)
        hashed.append((p, h.finish()))
    meta = {"dataset": "weights", "source": {"type": "http", "baseUrl": base_url},
            "revision": {p: {"size": len(d), "etag": '"forged"'} for p, d in evil.items()}}
    return build_torrent("weights", ps, hashed, {"syncbit": meta})


def test_a_hostile_peer_torrent_is_refused_and_the_node_reads_the_origin(tmp_path, origin):
    """The first-ranked target node answers /v1/metadata with a torrent of other bytes; the
    other node checks it against the origin's listing, refuses it, and builds from the origin
    once no node ranked above answers usefully."""
    names = ["u1", "u2"]
    hostile_name, honest_name = rank_nodes("weights", names)
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", nodes_yaml(names, first_ip=183))
    repo.write("datasets.yaml", weights_yaml(origin.url))
    repo.commit("unlocked, one target node is hostile")
    host, port = load_desired_state(repo.root, "x", require_locks=False
                                    ).nodes[hostile_name].api.rsplit(":", 1)
    forged = forged_torrent(origin.url + "/")
    hostile = HostilePeer(host, int(port), forged).start()
    try:
        home = NodeHome(honest_name, tmp_path / honest_name, repo.root).write_config()
        codes = wait_all([home.start_once()])
        log = (home.base / "once.log").read_text()
        assert codes == [0], log[-4000:]
    finally:
        hostile.stop()
    assert hostile.asked >= 1
    assert "metadata from peer refused" in log and "does not match the http source" in log
    assert "metadata built" in log and "metadata fetched" not in log
    d = home.status()["datasets"]["weights"]
    assert d["phase"] == "Ready" and d["infoHash"] != read_lock(forged, "t").info_hash
    assert tree_digest(home.data / "models" / "weights") == tree_digest(tmp_path / "origin")
    assert origin.bytes_sent >= TOTAL  # the bytes came from the origin, not the hostile peer
