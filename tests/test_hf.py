"""`hf` sources (DESIGN §3, §4, §5) against a Hugging Face Hub-compatible server (hf_server.py).

The metadata side is the real `huggingface_hub` client; the server speaks what that client
expects (a compatibility test downloads from it with `snapshot_download`). The CLI runs as real
subprocesses with `HF_ENDPOINT`/`HF_TOKEN` in their environment; nodes run real libtorrent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from harness import (NodeHome, StateRepo, assert_origin_offload, dataset_yaml, nodes_yaml,
                     pseudo_random, tree_digest, wait_all)
from hf_server import HubServer
from reconciler.model.desired import HfSource
from reconciler.adapters.sources import OriginContext, OriginError
from reconciler.adapters.sources.hf import HfOrigin, open_hf
from reconciler.torrent.hybrid import lock_extra, read_lock

TOKEN = "hf_TestTok3n7c1d9e2f4a6b8c0d5e7f9a1b3c"
WRONG = "hf_WrongTok9z8y7x6w5v4u3t2s1r0q"
LFS_MIN = 10_000  # files this big are "LFS": the hub redirects them to its CDN (another port)

CORPUS = {
    "config.json": b'{"hidden": 64}\n',
    "model-00001-of-00002.safetensors": pseudo_random(1_500_000, "c1"),
    "shards/deep/model-00002-of-00002.safetensors": pseudo_random(700_001, "c2"),
    "shards/with space/100% #1.safetensors": pseudo_random(15_000, "c3"),  # quoting
    "fp16/model-00001-of-00002.safetensors": pseudo_random(600_000, "x1"),
    "model.fp16.safetensors": pseudo_random(300_000, "x2"),
    "sub/config.json": b'{"nested": true}\n',
    "README.md": b"# corpus\n",
    "tokenizer.json": pseudo_random(20_000, "x3"),
}
INCLUDE = ["*.safetensors", "config.json"]  # `*` crosses `/`; `config.json` is the top one only
EXCLUDE = ["*fp16*"]
SELECTED = {"config.json", "model-00001-of-00002.safetensors",
            "shards/deep/model-00002-of-00002.safetensors", "shards/with space/100% #1.safetensors"}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest(files: dict[str, bytes]) -> dict[str, str]:
    return {p: sha256(d) for p, d in sorted(files.items())}


def hf_env(tmp_path: Path, hub: HubServer, token: str | None = None) -> dict[str, str]:
    return {"HF_ENDPOINT": hub.url, "HF_TOKEN": token or "", "HF_HOME": str(tmp_path / "hf-home"),
            "HF_HUB_OFFLINE": "", "HF_HUB_DISABLE_TELEMETRY": "1"}


def hf_yaml(name: str, repo: str, repo_type: str, include: list[str] | None = None,
            exclude: list[str] | None = None, revision: str | None = None) -> str:
    hf: dict[str, object] = {"repo": repo, "repoType": repo_type}
    if revision:
        hf["revision"] = revision
    if include:
        hf["include"] = tuple(include)
    if exclude:
        hf["exclude"] = tuple(exclude)
    return dataset_yaml(name, {"hf": hf}, path=f"data/{name}")


def make_state(tmp_path: Path, nodes: list[str], first_ip: int, doc: str) -> StateRepo:
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", nodes_yaml(nodes, first_ip=first_ip))
    (repo.root / "datasets.yaml").write_text(doc)
    return repo



def files_containing(root: Path, needle: bytes) -> list[str]:
    hits = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink() and needle in p.read_bytes():
            hits.append(str(p))
    return hits


@pytest.fixture
def hub() -> Iterator[HubServer]:
    server = HubServer(token=TOKEN, lfs_min=LFS_MIN, page_size=4).start()
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------
# lock


def test_lock_pins_exactly_the_globbed_files_at_the_resolved_commit(tmp_path, hub):
    sha = hub.create_repo("org/corpus", CORPUS, repo_type="dataset")
    repo = make_state(tmp_path, ["l1"], 61,
                      hf_yaml("corpus", "org/corpus", "dataset", INCLUDE, EXCLUDE))
    res = repo.lock(env=hf_env(tmp_path, hub))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "corpus: locked 4 file(s)" in res.stdout

    torrent = (repo.root / "locks" / "corpus.torrent").read_bytes()
    info = read_lock(torrent, "locks/corpus.torrent")
    assert dict(info.files) == {p: len(CORPUS[p]) for p in SELECTED}
    extra = lock_extra(torrent)["syncbit"]
    assert extra["source"] == {"type": "hf", "repo": "org/corpus", "repoType": "dataset",
                               "revision": "main", "commit": sha}
    revs = extra["revision"]
    assert set(revs) == SELECTED
    assert all(r["commit"] == sha and r["size"] == len(CORPUS[p]) for p, r in revs.items())
    for p in ("model-00001-of-00002.safetensors", "shards/deep/model-00002-of-00002.safetensors"):
        assert revs[p]["sha256"] == sha256(CORPUS[p])  # the LFS oid
    assert "sha256" not in revs["config.json"]  # a plain git file: blob id only
    assert "lock: locks/corpus.torrent" in (repo.root / "datasets.yaml").read_text()

    # Only selected files were read, each by commit sha, never by branch name.
    assert hub.requested_files("org/corpus") == SELECTED
    assert all(f"/resolve/{sha}/" in r.path for r in hub.resolve_requests("org/corpus"))
    assert {r.path.rsplit("/", 1)[1] for r in hub.cdn_requests()} == {
        sha256(CORPUS[p]) for p in SELECTED if len(CORPUS[p]) >= LFS_MIN}
    # The tree listing was paginated (page_size=4) and followed to the end.
    assert sum("/tree/" in r.path for r in hub.requests) > 1

    # Same commit, same bytes: the same torrent, byte for byte.
    again = repo.lock(env=hf_env(tmp_path, hub))
    assert again.returncode == 0 and "corpus: unchanged" in again.stdout, again.stderr
    assert (repo.root / "locks" / "corpus.torrent").read_bytes() == torrent


def test_server_speaks_the_hub_protocol_and_globs_match_snapshot_download(tmp_path, hub):
    """huggingface_hub's own downloader, against hf_server, takes the same files as the lock."""
    hub.create_repo("org/corpus", CORPUS, repo_type="dataset")
    out = tmp_path / "snapshot"
    script = ("import sys, huggingface_hub as h; h.snapshot_download('org/corpus', "
              "repo_type='dataset', local_dir=sys.argv[1], "
              f"allow_patterns={INCLUDE!r}, ignore_patterns={EXCLUDE!r})")
    r = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True,
                       timeout=60, env={**os.environ, **hf_env(tmp_path, hub)})
    assert r.returncode == 0, r.stderr
    got = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*")
           if p.is_file() and ".cache" not in p.relative_to(out).parts}
    assert got == {p: CORPUS[p] for p in SELECTED}
    # It HEADs then GETs through `resolve/`; LFS files follow the redirect to the CDN.
    assert any(r.method == "HEAD" for r in hub.resolve_requests("org/corpus"))
    assert hub.cdn_requests()


# --------------------------------------------------------------------------------------------
# convergence


def test_two_nodes_converge_and_excluded_files_are_never_requested(tmp_path, hub):
    hub.create_repo("org/corpus", CORPUS, repo_type="dataset")
    repo = make_state(tmp_path, ["h1", "h2"], 62,
                      hf_yaml("corpus", "org/corpus", "dataset", INCLUDE, EXCLUDE))
    env = hf_env(tmp_path, hub)
    assert repo.lock(env=env).returncode == 0
    repo.commit("lock")
    homes = [NodeHome(n, tmp_path / n, repo.root).write_config() for n in ("h1", "h2")]
    procs = [h.start_once(env=env) for h in homes]
    codes = wait_all(procs)
    assert codes == [0, 0], [(h.base / "once.log").read_text()[-3000:] for h in homes]
    expected = digest({p: CORPUS[p] for p in SELECTED})
    for h in homes:
        assert tree_digest(h.data / "data" / "corpus") == expected
        assert h.status()["datasets"]["corpus"]["phase"] == "Ready"
    # Nothing outside include/exclude was ever asked for, by lock or by the nodes.
    assert hub.requested_files("org/corpus") <= SELECTED
    assert {r.path.rsplit("/", 1)[1] for r in hub.cdn_requests()} <= {
        sha256(CORPUS[p]) for p in SELECTED}


def test_pinned_origin_reads_the_locked_commit_after_a_push(tmp_path, hub, monkeypatch):
    """The factory contract the gateway relies on: `pinned` (the lock's `syncbit.source`)
    fixes the commit; without it, the branch is resolved now (here: to the pushed commit)."""
    files = {"w.bin": pseudo_random(50_000, "old"), "c.json": b"{}\n"}
    old = hub.create_repo("org/m", files)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    src = HfSource("org/m")

    async def go() -> tuple[dict, bytes, bytes, str | None]:
        async with OriginContext(tmp_path) as ctx:
            locker = open_hf(src, ctx)
            await locker.list_files()
            pinned = locker.describe()
            hub.push("org/m", {"w.bin": pseudo_random(50_000, "new"), "c.json": b"[]\n"})
            gw = open_hf(src, ctx, pinned=pinned)  # what the gateway must build
            a = b"".join([c async for c in gw.read("w.bin", 1000, 20_000)])
            fresh = open_hf(src, ctx)  # no lock known: resolves `main` once, now
            b = b"".join([c async for c in fresh.read("w.bin", 1000, 20_000)])
            return pinned, a, b, fresh.commit

    pinned, a, b, fresh_commit = asyncio.run(go())
    assert pinned["commit"] == old
    assert a == files["w.bin"][1000:21_000]
    assert b == pseudo_random(50_000, "new")[1000:21_000] and fresh_commit != old

    with pytest.raises(OriginError, match="another source"):
        open_hf(HfSource("org/other"), type("C", (), {"http": None})(), pinned=pinned)


def test_nodes_fetch_the_locked_commit_after_the_branch_moves(tmp_path, hub):
    files = {"weights.safetensors": pseudo_random(900_000, "v1"), "config.json": b'{"v": 1}\n'}
    hub.create_repo("org/moving", files)
    repo = make_state(tmp_path, ["m1"], 64, hf_yaml("moving", "org/moving", "model"))
    env = hf_env(tmp_path, hub)
    assert repo.lock(env=env).returncode == 0
    repo.commit("lock")
    # Same paths and sizes, other bytes: only the commit tells them apart.
    hub.push("org/moving", {"weights.safetensors": pseudo_random(900_000, "v2"),
                            "config.json": b'{"v": 2}\n'})
    home = NodeHome("m1", tmp_path / "m1", repo.root).write_config()
    codes = wait_all([home.start_once(env=env, timeout=20)], timeout=60)
    assert codes == [0], (home.base / "once.log").read_text()[-3000:]
    assert tree_digest(home.data / "data" / "moving") == digest(files)


# --------------------------------------------------------------------------------------------
# private repos and the token


def test_private_repo_needs_the_right_token_which_never_leaks(tmp_path, hub):
    files = {"model.safetensors": pseudo_random(400_000, "p1"), "config.json": b'{"p": 1}\n'}
    hub.create_repo("org/secret-model", files, private=True)
    repo = make_state(tmp_path, ["p1"], 65, hf_yaml("secret", "org/secret-model", "model"))
    outputs = []

    r = repo.lock(env=hf_env(tmp_path, hub))
    outputs.append(r.stdout + r.stderr)
    assert r.returncode == 1
    assert "org/secret-model" in r.stderr and "HF_TOKEN is not set" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not (repo.root / "locks").exists()

    r = repo.lock(env=hf_env(tmp_path, hub, WRONG))
    outputs.append(r.stdout + r.stderr)
    assert r.returncode == 1
    assert "org/secret-model" in r.stderr and "HF_TOKEN was rejected" in r.stderr, r.stderr
    assert WRONG not in r.stdout + r.stderr and "Traceback" not in r.stderr

    env = hf_env(tmp_path, hub, TOKEN)
    r = repo.lock(env=env)
    outputs.append(r.stdout + r.stderr)
    assert r.returncode == 0, r.stderr
    repo.commit("lock")

    home = NodeHome("p1", tmp_path / "p1", repo.root).write_config()
    codes = wait_all([home.start_once(env=env)])
    log = (home.base / "once.log").read_text()
    assert codes == [0], log[-3000:]
    assert tree_digest(home.data / "data" / "secret") == digest(files)
    status = home.run("status", "--json", env=env)
    outputs.append(status.stdout + status.stderr)

    # The token went to the hub, and never followed a redirect to the CDN (another origin).
    hub_reads = hub.resolve_requests("org/secret-model")
    assert hub_reads and all(r.auth == f"Bearer {TOKEN}" for r in hub_reads)
    assert hub.cdn_requests() and all(r.auth is None for r in hub.cdn_requests())

    # ... and is nowhere on disk or in any output.
    for out in outputs + [log]:
        assert TOKEN not in out and WRONG not in out
    for root in (home.base, repo.root):  # config, state dir, store, status, metrics, logs; .git
        assert files_containing(root, TOKEN.encode()) == []
        assert files_containing(root, WRONG.encode()) == []
    torrent = (repo.root / "locks" / "secret.torrent").read_bytes()
    assert TOKEN.encode() not in torrent


def test_errors_name_the_repo_and_revision(tmp_path, hub, monkeypatch):
    hub.create_repo("org/pub", {"a.bin": pseudo_random(20_000, "a")}, repo_type="dataset")
    hub.create_repo("org/gated", {"g.bin": pseudo_random(20_000, "g")}, gated=True)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)

    async def error(src: HfSource, read: str | None = None, token: str | None = None) -> str:
        if token:
            monkeypatch.setenv("HF_TOKEN", token)
        else:
            monkeypatch.delenv("HF_TOKEN", raising=False)
        async with OriginContext(tmp_path) as ctx:
            o = open_hf(src, ctx)
            try:
                if read is None:
                    await o.list_files()
                else:
                    async for _ in o.read(read, 0, 10):
                        pass
            except OriginError as e:
                return str(e)
        raise AssertionError("no error")

    async def all_errors() -> list[str]:
        return [
            await error(HfSource("org/nope")),
            await error(HfSource("org/pub", "model")),  # right name, wrong type
            await error(HfSource("org/pub", "dataset", revision="v9")),
            await error(HfSource("org/pub", "dataset"), read="missing.bin"),
            await error(HfSource("org/gated"), read="g.bin"),
            await error(HfSource("org/pub", "dataset"), token=WRONG),
        ]

    msgs = asyncio.run(all_errors())
    assert "model org/nope (revision main): repository not found" in msgs[0]
    assert "HF_TOKEN is not set" in msgs[0]
    assert "model org/pub (revision main): repository not found" in msgs[1]
    assert "dataset org/pub (revision v9): revision v9 not found" in msgs[2]
    assert "dataset org/pub" in msgs[3] and "file missing.bin not found at commit" in msgs[3]
    assert "model org/gated" in msgs[4] and "gated repository; HF_TOKEN is not set" in msgs[4]
    assert "dataset org/pub" in msgs[5] and "HF_TOKEN was rejected" in msgs[5]
    assert not any(WRONG in m for m in msgs)


def test_describe_and_revision_carry_no_credentials(tmp_path, hub):
    hub.create_repo("org/priv", {"x.bin": pseudo_random(30_000, "x")}, private=True)
    env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN}

    async def go() -> tuple[dict, list]:
        async with OriginContext(tmp_path) as ctx:
            o = HfOrigin(HfSource("org/priv", revision="main"), ctx.http, env=env)
            files = await o.list_files()
            return o.describe(), [dict(f.revision) for f in files]

    desc, revs = asyncio.run(go())
    assert TOKEN not in json.dumps([desc, revs])
    assert desc["revision"] == "main" and len(str(desc["commit"])) == 40


# --------------------------------------------------------------------------------------------
# origin offload (DESIGN §5)

SWARM = {  # ~4.9 MiB: lock picks 16 KiB pieces; LFS files go through the CDN, config.json not
    "config.json": b'{"hidden": 2048, "layers": 24}\n',
    "model-00001-of-00003.safetensors": pseudo_random(2_000_000 + 1_234, "hf-sw1"),
    "model-00002-of-00003.safetensors": pseudo_random(3 << 19, "hf-sw2"),  # 1.5 MiB exactly
    "model-00003-of-00003.safetensors": pseudo_random(1_100_007, "hf-sw3"),
    "extra/optimizer.bin": pseudo_random(400_001, "hf-sw4"),
}


def test_three_simultaneous_once_runs_take_each_byte_from_the_hub_about_once(tmp_path, hub):
    hub.create_repo("org/swarm", SWARM)
    names = ["hfo1", "hfo2", "hfo3"]
    repo = make_state(tmp_path, names, 147, hf_yaml("swarm", "org/swarm", "model"))
    env = hf_env(tmp_path, hub)
    res = repo.lock(env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    repo.commit("lock")
    total = sum(map(len, SWARM.values()))
    homes = [NodeHome(n, tmp_path / n, repo.root).write_config() for n in names]

    sent_before = hub.bytes_sent  # the lock's read of every file is not counted
    cdn_before = len(hub.cdn_requests())
    codes = wait_all([h.start_once(env=env, timeout=60) for h in homes], timeout=90)
    assert codes == [0, 0, 0], [(h.base / "once.log").read_text()[-3000:] for h in homes]

    statuses = [h.status()["datasets"]["swarm"] for h in homes]
    for h, d in zip(homes, statuses):
        assert tree_digest(h.data / "data" / "swarm") == digest(SWARM)
        assert (d["phase"], d["bytesDone"]) == ("Ready", total)
    # Counted at the source: body bytes the hub and its CDN wrote to clients ...
    sent = hub.bytes_sent - sent_before
    cdn_gets = sum(r.method == "GET" for r in hub.cdn_requests()[cdn_before:])
    # ... and what the nodes' gateways read from it (their status files).
    assert_origin_offload(statuses, total, sent, f"hub ({cdn_gets} CDN GETs)")


def test_parallel_ranged_reads_are_byte_exact_and_the_token_stays_on_the_hub(
        tmp_path, hub, monkeypatch):
    """The gateway's way of reading (sources.parallel.read_parallel): several ranged GETs of
    one file at once, each resolved and redirected to the CDN on its own; the bytes come in
    order and exact, and HF_TOKEN goes only to the endpoint, never to the CDN."""
    from reconciler.adapters.sources.parallel import read_parallel

    data = CORPUS["model-00001-of-00002.safetensors"]
    hub.create_repo("org/private", {"model-00001-of-00002.safetensors": data}, private=True)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    path = "model-00001-of-00002.safetensors"

    async def go() -> tuple[bytes, bytes, int]:
        async with OriginContext(tmp_path) as ctx:
            origin = open_hf(HfSource("org/private"), ctx)
            reader = read_parallel(origin, path, 0, len(data), streams=8,
                                   slots=asyncio.Semaphore(8), min_part=64 << 10)
            first = await anext(reader)
            # Not consumed yet, and every part was already asked for: they run at once.
            for _ in range(200):
                ranged = [r for r in hub.cdn_requests() if r.range]
                if len(ranged) >= 8:
                    break
                await asyncio.sleep(0.05)
            rest = b"".join([c async for c in reader])
            sub = b"".join([c async for c in read_parallel(
                origin, path, 99_999, 700_001, streams=4, min_part=64 << 10)])
            return first + rest, sub, len(ranged)

    whole, sub, concurrent = asyncio.run(go())
    assert whole == data and sub == data[99_999:800_000]
    assert concurrent >= 8
    cdn = hub.cdn_requests()
    assert cdn and all(r.auth is None for r in cdn)
    resolves = [r for r in hub.requests if r.port == "hub" and "/resolve/" in r.path]
    assert resolves and all(r.auth == f"Bearer {TOKEN}" for r in resolves)


def test_a_files_ranges_ask_the_hub_once_and_a_refused_location_is_asked_again(
        tmp_path, hub, monkeypatch):
    """The CDN location the Hub redirects a file to is kept: 8 ranges read at once, then 4
    more, cost one `resolve` (the Hub rate-limits them), not 12; a kept location the CDN
    refuses (its signature rotated) or one past `LOCATION_SECONDS` is asked for again, once
    for all the ranges in flight, and the token never goes to the CDN."""
    from reconciler.adapters.sources import hf
    from reconciler.adapters.sources.parallel import read_parallel

    path = "model-00001-of-00002.safetensors"
    data = CORPUS[path]
    hub.create_repo("org/private", {path: data, "config.json": CORPUS["config.json"]},
                    private=True)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)

    def resolves(name: str) -> int:
        return sum(1 for r in hub.requests
                   if r.port == "hub" and "/resolve/" in r.path and r.path.endswith(name))

    async def go() -> None:
        async with OriginContext(tmp_path) as ctx:
            origin = open_hf(HfSource("org/private"), ctx)

            async def read(offset: int, length: int, streams: int) -> bytes:
                return b"".join([c async for c in read_parallel(
                    origin, path, offset, length, streams=streams, min_part=64 << 10)])

            assert await read(0, len(data), 8) == data
            assert await read(99_999, 700_001, 4) == data[99_999:800_000]
            assert resolves(path) == 1
            assert len([r for r in hub.cdn_requests() if r.range]) == 12

            hub._secret = b"rotated"  # every kept location is now refused by the CDN
            assert await read(0, len(data), 8) == data
            assert resolves(path) == 2  # refused once, asked again once, kept again

            # The kept location ages past LOCATION_SECONDS: the next ranges ask the Hub once.
            assert isinstance(origin, hf.HfOrigin)
            origin._located = {k: (u, 0.0) for k, (u, _) in origin._located.items()}
            assert await read(0, 300_000, 2) == data[:300_000]
            assert resolves(path) == 3
            # A small file the Hub serves itself is not redirected: nothing to keep.
            for _ in range(2):
                assert b"".join([c async for c in origin.read("config.json")]) == \
                    CORPUS["config.json"]
            assert resolves("config.json") == 2

    asyncio.run(go())
    cdn = hub.cdn_requests()
    assert cdn and all(r.auth is None for r in cdn)
    assert all(r.auth == f"Bearer {TOKEN}" for r in hub.requests
               if r.port == "hub" and "/resolve/" in r.path)


def test_lock_reads_cdn_files_on_threads_and_falls_back_when_a_location_is_refused(
        tmp_path, hub, monkeypatch):
    """`build_lock` over a private repo: the files the Hub redirects are read on range threads
    (`HfRanges`) from the kept CDN location, with no token; after the CDN's signatures rotate,
    a build with the locations still kept falls back to `HfOrigin.read` (the Hub asked again)
    and makes the same torrent, its progress ending at the total."""
    from reconciler.adapters.sources.hf import HfRanges
    from reconciler.engine.locking import build_lock
    from reconciler.model.desired import Dataset, FileSource, Placement

    files = {p: CORPUS[p] for p in SELECTED} | {"empty.bin": b""}
    hub.create_repo("org/private", files, private=True)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    local = tmp_path / "local"
    for rel, data in files.items():
        (local / rel).parent.mkdir(parents=True, exist_ok=True)
        (local / rel).write_bytes(data)
    big = sorted(p for p, d in files.items() if len(d) >= LFS_MIN)

    def dataset(source: object) -> Dataset:
        return Dataset(name="m", version="1", source=source, placement=Placement(all=True),
                       path="m")

    async def go() -> tuple[bytes, bytes, bytes, list[tuple[int, int]], int, int]:
        async with OriginContext(tmp_path) as ctx:
            origin = open_hf(HfSource("org/private"), ctx)
            assert isinstance(await origin.range_reader(big[0]), HfRanges)
            assert await origin.range_reader("config.json") is None  # served by the Hub
            first = await build_lock(dataset(HfSource("org/private")), ctx, origin=origin)
            cdn_plain = len(hub.cdn_requests())
            assert [resolves(p) for p in big] == [1] * len(big)  # the probe's, kept since
            hub._secret = b"rotated"  # every kept location is now refused
            seen: list[tuple[int, int]] = []
            again = await build_lock(dataset(HfSource("org/private")), ctx,
                                     lambda d, t: seen.append((d, t)), origin=origin)
            ref = await build_lock(dataset(FileSource(str(local))), ctx)
            return first, again, ref, seen, cdn_plain, len(hub.cdn_requests())

    def resolves(path: str) -> int:
        return sum(1 for r in hub.requests
                   if r.port == "hub" and "/resolve/" in r.path and r.path.endswith(path))

    first, again, ref, seen, cdn_plain, cdn_all = asyncio.run(go())
    assert [resolves(p) for p in big] == [2] * len(big)  # refused: the Hub asked once more
    assert resolves("empty.bin") == 0  # no bytes: nothing asked of anyone
    assert resolves("config.json") == 3  # the probe above, then one read per build
    assert read_lock(first, "m").info_hash == read_lock(again, "m").info_hash == \
        read_lock(ref, "m").info_hash
    total = sum(len(d) for d in files.values())
    assert seen[-1] == (total, total)
    assert cdn_all > cdn_plain
    assert all(r.auth is None for r in hub.cdn_requests())
    # The threads asked the CDN for ranges (the one-byte probes are the resolves' own).
    assert any(r.range and r.range != "bytes=0-0" for r in hub.cdn_requests())
