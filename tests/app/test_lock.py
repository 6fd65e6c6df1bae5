"""`syncbit-reconcile lock DIR [DATASET...]` (DESIGN §3 `spec.lock`, §7).

The CLI runs as a real subprocess against real sources: local directories for `file`, and the
aiohttp `OriginServer` for `http`. Layout-preservation variants call `lock_state_repo` in-process,
which is what the CLI runs.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from origin_server import OriginServer
from reconciler.model.desired import DesiredState
from reconciler.desired.validate import load_desired_state
from reconciler.app.lock import lock_state_repo
from reconciler.torrent.hybrid import lock_extra, read_lock

TOKEN = "tok-9f3a1c77e2b04d5a-very-secret"

NODES = """\
apiVersion: syncbit/v1
kind: Node
metadata:
  name: node-a
  labels: {gpu: h100}
spec:
  peer: "127.0.0.1:6881"
  api: "127.0.0.1:7070"
"""

ERROR_LINE = re.compile(r"^(?P<file>[^:\s][^:]*):(?P<line>\d+):(?P<col>\d+): (?P<field>\S+): "
                        r"(?P<message>.+)$")


def run_cli(*args: str | Path, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "ORIGIN_TOKEN"}
    return subprocess.run([sys.executable, "-m", "reconciler", *map(str, args)],
                          capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={**base, **(env or {})})


def dataset_yaml(name: str, source: str, extra: str = "") -> str:
    """A Dataset document; `source` is the YAML under `source:`, indented by 4."""
    return (f"apiVersion: syncbit/v1\nkind: Dataset\nmetadata:\n  name: {name}\nspec:\n"
            f"  version: \"1\"\n  source:\n{source}  placement:\n    nodes: [node-a]\n"
            f"  path: datasets/{name}\n{extra}")


def file_source(path: str) -> str:
    return f"    file:\n      path: {path}\n"


def make_repo(root: Path, datasets: dict[str, str]) -> Path:
    """A state repo with one node and `datasets` as {relative file: YAML text}."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "nodes.yaml").write_text(NODES)
    for rel, text in datasets.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def write_tree(root: Path, files: dict[str, bytes]) -> dict[str, bytes]:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def load_ok(root: Path) -> DesiredState:
    state = load_desired_state(root, "test")
    assert isinstance(state, DesiredState), state
    return state


def added_lines(before: bytes, after: bytes) -> list[str]:
    """The diff of two texts as '+line'/'-line' entries (line ends included, so CRLF shows)."""
    a = before.decode("utf-8").splitlines(keepends=True)
    b = after.decode("utf-8").splitlines(keepends=True)
    return [d for d in difflib.ndiff(a, b) if d[:1] in "+-"]


def get_counts(server: OriginServer) -> dict[str, int]:
    counts: dict[str, int] = {}
    for method, path, _ in server.requests:
        if method == "GET":
            counts[path] = counts.get(path, 0) + 1
    return counts


@pytest.fixture
def origin(origins, tmp_path: Path) -> tuple[OriginServer, Path]:
    """An origin serving nothing yet: each test writes its files into the root."""
    return origins({}, name="served"), tmp_path / "served"


@pytest.fixture
def token_origin(origins, tmp_path: Path) -> tuple[OriginServer, Path]:
    return origins({}, name="served-auth", token=TOKEN), tmp_path / "served-auth"


# --------------------------------------------------------------------------------------------
# 1. file sources


def test_lock_file_directory_and_single_file(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    tree = write_tree(root / "data" / "model", {
        "config.json": b'{"layers": 2}\n',
        "weights/part-0.bin": os.urandom(300_000),
        "weights/nested/deep/part-1.bin": os.urandom(70_001),
        "empty.txt": b"",
    })
    single = os.urandom(4097)
    (root / "data" / "notes.txt").write_bytes(single)
    make_repo(root, {
        "datasets/model.yaml": dataset_yaml("model", file_source("data/model")),
        "datasets/notes.yaml": dataset_yaml("notes", file_source("data/notes.txt")),
    })

    r = run_cli("lock", root)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "model: locked" in r.stdout and "notes: locked" in r.stdout

    for name in ("model", "notes"):
        assert (root / "locks" / f"{name}.torrent").is_file()
        assert f"  lock: locks/{name}.torrent\n" in (root / f"datasets/{name}.yaml").read_text()

    v = run_cli("validate", root)
    assert v.returncode == 0, v.stdout + v.stderr
    assert "valid" in v.stdout

    model = read_lock((root / "locks/model.torrent").read_bytes(), "locks/model.torrent")
    assert model.name == "model"
    assert sorted(model.files) == sorted((p, len(d)) for p, d in tree.items())
    assert model.total_bytes == sum(len(d) for d in tree.values())

    notes = read_lock((root / "locks/notes.torrent").read_bytes(), "locks/notes.torrent")
    assert notes.files == (("notes.txt", len(single)),)
    assert notes.total_bytes == len(single)

    # What validate loads is the lock that was written.
    state = load_ok(root)
    assert state.datasets["model"].lock is not None
    assert state.datasets["model"].lock.info_hash == model.info_hash
    assert state.datasets["notes"].lock is not None
    assert state.datasets["notes"].lock.info_hash == notes.info_hash


def test_lock_skips_git_directory_of_a_file_source(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write_tree(root / "data", {"a.txt": b"a", ".git/HEAD": b"ref: refs/heads/main\n"})
    make_repo(root, {"d.yaml": dataset_yaml("d", file_source("data"))})
    assert asyncio.run(lock_state_repo(root, [])) == 0
    info = read_lock((root / "locks/d.torrent").read_bytes(), "x")
    assert info.files == (("a.txt", 1),)


def test_lock_follows_symlinks_in_a_file_source(tmp_path: Path) -> None:
    """A Hugging Face cache snapshot is symlinks into `../../blobs`; they are the dataset's files."""
    root = tmp_path / "repo"
    cache = tmp_path / "hf-cache"
    blobs = write_tree(cache / "blobs", {"1f2e": os.urandom(20_000), "9a8b": b'{"a": 1}'})
    snap = cache / "snapshots" / "abc123"
    (snap / "sub").mkdir(parents=True)
    (snap / "model.safetensors").symlink_to("../../blobs/1f2e")
    (snap / "sub" / "config.json").symlink_to("../../../blobs/9a8b")
    (snap / "sub" / "loop").symlink_to("..")  # a directory loop is not followed
    (snap / "shared").symlink_to(cache / "blobs")  # a symlinked directory is
    make_repo(root, {"d.yaml": dataset_yaml("hf", file_source(str(snap)))})

    r = run_cli("lock", root)
    assert r.returncode == 0, r.stderr
    info = read_lock((root / "locks/hf.torrent").read_bytes(), "x")
    assert sorted(info.files) == [("model.safetensors", 20_000), ("shared/1f2e", 20_000),
                                  ("shared/9a8b", len(blobs["9a8b"])),
                                  ("sub/config.json", len(blobs["9a8b"]))]


def test_file_origin_refuses_paths_that_climb_out(tmp_path: Path) -> None:
    from reconciler.model.desired import FileSource
    from reconciler.adapters.sources import OriginError
    from reconciler.adapters.sources.file import FileOrigin

    write_tree(tmp_path, {"src/a.txt": b"a", "secret.txt": b"s"})
    o = FileOrigin(FileSource("src"), tmp_path)

    async def read(path: str) -> bytes:
        return b"".join([c async for c in o.read(path)])

    assert asyncio.run(read("a.txt")) == b"a"
    for bad in ("../secret.txt", str(tmp_path / "secret.txt"), "x/../../secret.txt", ""):
        with pytest.raises(OriginError):
            asyncio.run(read(bad))


# --------------------------------------------------------------------------------------------
# 2. comments and layout preserved

RICH = """\
# yaml-language-server: $schema=../schemas/dataset.schema.json
#
# Weights for the ranking model.  Comments, quoting and flow style must survive `lock`.
apiVersion: syncbit/v1
kind: Dataset
metadata:
  name: ranker            # the dataset's name
  # a comment between keys
spec:
  version: "2026-11-01"   # double-quoted
  source:
    file:
      path: 'data/ranker'  # single-quoted
  mirrors: []
  placement:
    nodes: [node-a]       # flow list
  path: "models/ranker"   # where consumers read it
  priority: high
  keepVersions: 2

# a comment before the second document
---
# the second document's own comment
apiVersion: syncbit/v1
kind: Dataset
metadata: {name: ranker-eval}
spec:
  version: '7'
  source: {file: {path: data/eval.jsonl}}
  placement: {replicas: 1, selector: {gpu: h100}}
  path: datasets/ranker-eval   # trailing comment on the last key
# a comment at the end of the file
"""


def test_lock_preserves_comments_and_layout(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write_tree(root / "data", {"ranker/w.bin": os.urandom(5000), "ranker/cfg.json": b"{}",
                               "eval.jsonl": b'{"q": 1}\n'})
    make_repo(root, {"datasets/ranker.yaml": RICH})
    before = (root / "datasets/ranker.yaml").read_bytes()

    r = run_cli("lock", root)
    assert r.returncode == 0, r.stderr

    after = (root / "datasets/ranker.yaml").read_bytes()
    assert added_lines(before, after) == ["+   lock: locks/ranker.torrent\n",
                                          "+   lock: locks/ranker-eval.torrent\n"]
    lines = after.decode().splitlines()
    # Placed right after `path`, at the mapping's indentation.
    assert lines[lines.index('  path: "models/ranker"   # where consumers read it') + 1] \
        == "  lock: locks/ranker.torrent"
    assert lines[lines.index("  path: datasets/ranker-eval   # trailing comment on the last key")
                 + 1] == "  lock: locks/ranker-eval.torrent"
    assert run_cli("validate", root).returncode == 0

    # Locking again changes nothing in the YAML.
    r = run_cli("lock", root)
    assert r.returncode == 0, r.stderr
    assert (root / "datasets/ranker.yaml").read_bytes() == after


DOC = dataset_yaml("d", file_source("data"))
FLOW = ('apiVersion: syncbit/v1\nkind: Dataset\nmetadata: {name: d}\n'
        'spec: {version: "1", source: {file: {path: data}}, placement: {all: true}, '
        'path: ds/d}\n')
JSONISH = ('{"apiVersion": "syncbit/v1", "kind": "Dataset", "metadata": {"name": "d"}, '
           '"spec": {"version": "1", "source": {"file": {"path": "data"}}, '
           '"placement": {"all": true}, "path": "ds/d"}}\n')
NODE_Z = NODES.replace("node-a", "node-z")

LAYOUTS = {
    # name: (file text, the one expected diff line)
    "comment-then-marker": ("# yaml-language-server: $schema=x.json\n---\n" + DOC,
                            "+   lock: locks/d.torrent\n"),
    "marker-first": ("---\n" + DOC, "+   lock: locks/d.torrent\n"),
    "marker-then-comment": ("---\n# about d\n\n" + DOC, "+   lock: locks/d.torrent\n"),
    "comment-marker-two-docs": ("# header\n---\n" + NODE_Z + "---\n" + DOC,
                                "+   lock: locks/d.torrent\n"),
    "dataset-first-of-two": ("# header\n" + DOC + "---\n" + NODE_Z,
                             "+   lock: locks/d.torrent\n"),
    "document-end-marker": ("---\n" + DOC + "...\n", "+   lock: locks/d.torrent\n"),
    "full-line-comment-after-path": (
        DOC.replace("  path: datasets/d\n",
                    "  path: datasets/d   # eol\n  # about priority\n  priority: low\n"),
        "+   lock: locks/d.torrent\n"),
    "path-not-last": (DOC.replace("  placement:\n    nodes: [node-a]\n  path: datasets/d\n",
                                  "  path: datasets/d\n  placement:\n    nodes: [node-a]\n"),
                      "+   lock: locks/d.torrent\n"),
    "multi-line-path": (DOC.replace("  path: datasets/d\n", "  path:\n    datasets/d\n"),
                        "+   lock: locks/d.torrent\n"),
    "block-scalar-path": (DOC.replace("  path: datasets/d\n",
                                      "  path: >-\n    datasets/d\n\n  priority: low\n"),
                          "+   lock: locks/d.torrent\n"),
    "indent-4": (DOC.replace("\n  ", "\n    ").replace("\n      ", "\n        "),
                 "+     lock: locks/d.torrent\n"),
    "crlf": (DOC.replace("\n", "\r\n"), "+   lock: locks/d.torrent\r\n"),
    "crlf-block-scalar-path": (
        DOC.replace("  path: datasets/d\n", "  path: |-\n    datasets/d\n  priority: low\n")
        .replace("\n", "\r\n"), "+   lock: locks/d.torrent\r\n"),
    "bom": ("\ufeff" + DOC, "+   lock: locks/d.torrent\n"),
    "flow-spec": (FLOW, None),
    "json-style": (JSONISH, None),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_lock_adds_exactly_one_line(tmp_path: Path, layout: str) -> None:
    text, expected = LAYOUTS[layout]
    root = make_repo(tmp_path / "repo", {"d.yaml": ""})
    (root / "d.yaml").write_bytes(text.encode())
    write_tree(root / "data", {"f.bin": b"x" * 100})

    assert asyncio.run(lock_state_repo(root, [])) == 0
    after = (root / "d.yaml").read_bytes()
    diff = added_lines(text.encode(), after)
    if expected is not None:
        assert diff == [expected]
    else:  # flow style: the lock joins the mapping on its line
        assert len(diff) == 2 and diff[0].startswith("- ") and diff[1].startswith("+ ")
        assert diff[1][2:].replace(', "lock": "locks/d.torrent"', "") \
            .replace(", lock: locks/d.torrent", "") == diff[0][2:]
    state = load_ok(root)
    assert state.datasets["d"].lock is not None
    assert state.datasets["d"].lock.path == "locks/d.torrent"


def test_lock_without_final_newline(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", {"d.yaml": DOC.rstrip("\n")})
    write_tree(root / "data", {"f.bin": b"x"})
    assert asyncio.run(lock_state_repo(root, [])) == 0
    assert (root / "d.yaml").read_text() == DOC + "  lock: locks/d.torrent"
    load_ok(root)


def test_declared_lock_path_that_does_not_exist_yet(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write_tree(root / "data", {"f.bin": os.urandom(1000)})
    text = dataset_yaml("d", file_source("data"),
                        '  lock: "pins/nested/d-v1.torrent"   # chosen by hand\n')
    make_repo(root, {"d.yaml": text})
    # Not yet valid for validate: the lock file is missing.
    assert run_cli("validate", root).returncode == 1

    r = run_cli("lock", root)
    assert r.returncode == 0, r.stderr
    assert "pins/nested/d-v1.torrent" in r.stdout
    assert (root / "d.yaml").read_text() == text
    assert not (root / "locks").exists()
    info = read_lock((root / "pins/nested/d-v1.torrent").read_bytes(), "x")
    assert info.files == (("f.bin", 1000),)
    assert run_cli("validate", root).returncode == 0


def test_symlinked_dataset_file_stays_a_symlink(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", {})
    (root / "real").mkdir()
    (root / "real/d.src").write_text(DOC)  # not a .yaml file: loaded only through the link
    (root / "d-link.yaml").symlink_to("real/d.src")
    write_tree(root / "data", {"f.bin": b"x"})
    assert asyncio.run(lock_state_repo(root, [])) == 0
    assert (root / "d-link.yaml").is_symlink()
    assert (root / "real/d.src").read_text() == DOC.replace(
        "  path: datasets/d\n", "  path: datasets/d\n  lock: locks/d.torrent\n")


# --------------------------------------------------------------------------------------------
# 3. determinism and the recorded revision


def test_lock_is_deterministic_and_revision_stays_outside_the_info_hash(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write_tree(root / "data", {"a.bin": os.urandom(200_000), "b/c.txt": b"hello\n"})
    make_repo(root, {"d.yaml": dataset_yaml("d", file_source("data"))})
    lock_path = root / "locks/d.torrent"

    r1 = run_cli("lock", root)
    assert r1.returncode == 0, r1.stderr
    first = lock_path.read_bytes()
    yaml_after_first = (root / "d.yaml").read_bytes()

    r2 = run_cli("lock", root)
    assert r2.returncode == 0, r2.stderr
    assert "d: unchanged" in r2.stdout
    assert lock_path.read_bytes() == first
    assert (root / "d.yaml").read_bytes() == yaml_after_first

    extra = lock_extra(first)
    st_a, st_c = (root / "data/a.bin").stat(), (root / "data/b/c.txt").stat()
    assert extra["syncbit"]["dataset"] == "d"
    assert extra["syncbit"]["source"] == {"type": "file", "path": "data"}
    assert extra["syncbit"]["revision"] == {
        "a.bin": {"size": 200_000, "mtime": int(st_a.st_mtime)},
        "b/c.txt": {"size": 6, "mtime": int(st_c.st_mtime)},
    }

    # A copy of the repo with the same mtimes elsewhere: the very same bytes.
    copy = tmp_path / "elsewhere" / "repo-copy"
    shutil.copytree(root, copy)  # copy2 keeps mtimes
    (copy / "locks/d.torrent").unlink()
    assert asyncio.run(lock_state_repo(copy, [])) == 0
    assert (copy / "locks/d.torrent").read_bytes() == first

    # New mtime, same bytes: the recorded revision changes, the info-hashes do not.
    os.utime(root / "data/a.bin", (st_a.st_atime + 1000, st_a.st_mtime + 1000))
    r3 = run_cli("lock", root)
    assert r3.returncode == 0, r3.stderr
    assert "d: locked" in r3.stdout
    third = lock_path.read_bytes()
    assert third != first
    assert lock_extra(third)["syncbit"]["revision"]["a.bin"]["mtime"] == int(st_a.st_mtime) + 1000
    before, after = read_lock(first, "x"), read_lock(third, "x")
    assert (after.info_hash, after.info_hash_v1) == (before.info_hash, before.info_hash_v1)

    # New bytes: a new info-hash.
    (root / "data/b/c.txt").write_bytes(b"HELLO\n")
    assert run_cli("lock", root).returncode == 0
    assert read_lock(lock_path.read_bytes(), "x").info_hash != before.info_hash


# --------------------------------------------------------------------------------------------
# 4. http sources


def http_source(base_url: str | None = None, files: list[str] | None = None,
                urls: list[str] | None = None, headers: dict[str, str] | None = None) -> str:
    out = "    http:\n"
    if base_url is not None:
        out += f"      baseUrl: {base_url}\n      files:\n"
        out += "".join(f"        - {json.dumps(f)}\n" for f in files or [])
    if urls is not None:
        out += "      urls:\n" + "".join(f"        - {json.dumps(u)}\n" for u in urls)
    if headers:
        out += "      headers:\n" + "".join(f"        {k}: {json.dumps(v)}\n"
                                             for k, v in headers.items())
    return out


def test_lock_http_base_url_reads_each_file_once(tmp_path: Path,
                                                 origin: tuple[OriginServer, Path]) -> None:
    server, served = origin
    files = write_tree(served / "v2", {
        "model.bin": os.urandom(1_300_000),
        "tokenizer/vocab with space.txt": b"a\nb\nc\n",
        "empty.txt": b"",
    })
    root = make_repo(tmp_path / "repo", {
        "d.yaml": dataset_yaml("web", http_source(f"{server.url}/v2", sorted(files)))})

    r = run_cli("lock", root)
    assert r.returncode == 0, r.stderr
    # Every file read, each byte once: model.bin as several range requests (on threads,
    # engine/threaded_read.py), the small one with one GET, the empty one not at all (its
    # listing says it has no bytes).
    counts = get_counts(server)
    assert set(counts) == {f"/v2/{p}" for p, d in files.items() if d}
    assert counts["/v2/model.bin"] > 1
    assert server.bytes_sent == sum(len(d) for d in files.values())
    assert {m for m, _, _ in server.requests} <= {"GET", "HEAD"}

    info = read_lock((root / "locks/web.torrent").read_bytes(), "x")
    assert sorted(info.files) == sorted((p, len(d)) for p, d in files.items())
    extra = lock_extra((root / "locks/web.torrent").read_bytes())["syncbit"]
    assert extra["source"] == {"type": "http", "baseUrl": f"{server.url}/v2"}
    for p, data in files.items():
        assert extra["revision"][p]["etag"] == '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        assert extra["revision"][p]["size"] == len(data)
    assert run_cli("validate", root).returncode == 0


def test_lock_http_urls(tmp_path: Path, origin: tuple[OriginServer, Path]) -> None:
    server, served = origin
    files = write_tree(served, {"a/shard-0.jsonl": os.urandom(70_000),
                                "b/shard-1.jsonl": os.urandom(1234)})
    urls = [f"{server.url}/{p}" for p in sorted(files)]
    root = make_repo(tmp_path / "repo", {"d.yaml": dataset_yaml("shards", http_source(urls=urls))})

    r = run_cli("lock", root)
    assert r.returncode == 0, r.stderr
    assert get_counts(server) == {"/a/shard-0.jsonl": 1, "/b/shard-1.jsonl": 1}
    assert server.bytes_sent == 70_000 + 1234
    data = (root / "locks/shards.torrent").read_bytes()
    info = read_lock(data, "x")
    assert sorted(info.files) == [("shard-0.jsonl", 70_000), ("shard-1.jsonl", 1234)]
    assert set(lock_extra(data)["syncbit"]["revision"]) == {"shard-0.jsonl", "shard-1.jsonl"}

    # Same bytes, same ETags: byte-identical on a second lock.
    r = run_cli("lock", root)
    assert r.returncode == 0 and "shards: unchanged" in r.stdout
    assert (root / "locks/shards.torrent").read_bytes() == data


def test_lock_http_header_from_environment(tmp_path: Path,
                                           token_origin: tuple[OriginServer, Path]) -> None:
    server, served = token_origin
    files = write_tree(served, {"w.bin": os.urandom(50_000), "cfg.json": b"{}"})
    text = dataset_yaml("private", http_source(
        server.url, sorted(files), headers={"Authorization": "Bearer ${ORIGIN_TOKEN}"}))
    root = make_repo(tmp_path / "repo", {"d.yaml": text})
    lock_path = root / "locks/private.torrent"

    # Unset: fails naming the variable, nothing written, nothing asked of the origin.
    r = run_cli("lock", root)
    assert r.returncode == 1
    assert "ORIGIN_TOKEN" in r.stderr and "private" in r.stderr
    assert TOKEN not in r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert not lock_path.exists()
    assert (root / "d.yaml").read_text() == text
    assert server.requests == []

    # Wrong value: the origin refuses, the value is not shown.
    r = run_cli("lock", root, env={"ORIGIN_TOKEN": "wrong-" + TOKEN[::-1]})
    assert r.returncode == 1
    assert "401" in r.stderr and "private" in r.stderr
    assert TOKEN[::-1] not in r.stdout + r.stderr
    assert not lock_path.exists()

    # Set: works; the token is nowhere in the lock or the output.
    server.requests.clear()
    server.bytes_sent = 0
    r = run_cli("lock", root, env={"ORIGIN_TOKEN": TOKEN})
    assert r.returncode == 0, r.stderr
    assert TOKEN not in r.stdout + r.stderr
    data = lock_path.read_bytes()
    assert TOKEN.encode() not in data
    assert b"Bearer" not in data and b"Authorization" not in data
    assert "Authorization" not in json.dumps(lock_extra(data), default=repr)
    assert get_counts(server) == {"/w.bin": 1, "/cfg.json": 1}
    assert server.bytes_sent == 50_002
    assert TOKEN not in (root / "d.yaml").read_text()


# --------------------------------------------------------------------------------------------
# 5. failures


def test_http_urls_with_the_same_file_name_fail(tmp_path: Path,
                                                origin: tuple[OriginServer, Path]) -> None:
    server, served = origin
    write_tree(served, {"a/x.bin": b"1", "b/x.bin": b"2"})
    root = make_repo(tmp_path / "repo", {"d.yaml": dataset_yaml(
        "dup", http_source(urls=[f"{server.url}/a/x.bin", f"{server.url}/b/x.bin"]))})
    r = run_cli("lock", root)
    assert r.returncode == 1
    assert re.search(r"^dup: FAILED: .*x\.bin", r.stderr, re.M), r.stderr
    assert not (root / "locks").exists()


def test_http_404_names_dataset_and_file(tmp_path: Path,
                                         origin: tuple[OriginServer, Path]) -> None:
    server, served = origin
    write_tree(served, {"present.bin": b"p" * 10})
    root = make_repo(tmp_path / "repo", {"d.yaml": dataset_yaml(
        "web", http_source(server.url, ["present.bin", "missing-shard.bin"]))})
    r = run_cli("lock", root)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    line = next(ln for ln in r.stderr.splitlines() if ln.startswith("web:"))
    assert "missing-shard.bin" in line and "404" in line
    assert not (root / "locks").exists()


def test_nonexistent_file_source(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", {"d.yaml": dataset_yaml("d", file_source("data/nope"))})
    r = run_cli("lock", root)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert re.search(r"^d: .*data/nope", r.stderr, re.M), r.stderr
    assert not (root / "locks").exists()


def test_source_without_non_empty_files_fails(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", {"a.yaml": dataset_yaml("a", file_source("empty-dir")),
                                         "b.yaml": dataset_yaml("b", file_source("zeros"))})
    (root / "empty-dir").mkdir()
    write_tree(root / "zeros", {"z1": b"", "z2": b""})
    r = run_cli("lock", root)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert re.search(r"^a: FAILED", r.stderr, re.M) and re.search(r"^b: FAILED", r.stderr, re.M)


def test_unknown_dataset(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", {"d.yaml": dataset_yaml("d", file_source("data"))})
    write_tree(root / "data", {"f": b"f"})
    r = run_cli("lock", root, "d", "no-such-ds")
    assert r.returncode == 1
    assert "no-such-ds" in r.stderr
    assert not (root / "locks").exists()  # nothing is locked when the request is wrong


def test_lock_named_datasets_only(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", {"a.yaml": dataset_yaml("a", file_source("data")),
                                         "b.yaml": dataset_yaml("b", file_source("data"))})
    write_tree(root / "data", {"f": b"f"})
    r = run_cli("lock", root, "b")
    assert r.returncode == 0, r.stderr
    assert (root / "locks/b.torrent").exists() and not (root / "locks/a.torrent").exists()
    assert "lock:" not in (root / "a.yaml").read_text()


def test_lock_refuses_an_invalid_state_repo(tmp_path: Path) -> None:
    bad = dataset_yaml("d", file_source("data")).replace("  version: \"1\"\n",
                                                          "  version: \"1\"\n  colour: blue\n")
    root = make_repo(tmp_path / "repo", {"datasets/d.yaml": bad})
    write_tree(root / "data", {"f": b"f"})
    r = run_cli("lock", root)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    errors = [m for m in map(ERROR_LINE.match, r.stderr.splitlines()) if m]
    assert errors, r.stderr
    assert errors[0]["file"] == "datasets/d.yaml"
    assert (errors[0]["line"], errors[0]["col"]) == ("7", "3")
    assert "colour" in errors[0]["field"] + errors[0]["message"]
    assert not (root / "locks").exists()
    assert (root / "datasets/d.yaml").read_text() == bad


@pytest.mark.parametrize("what", ["file", "missing"])
def test_lock_dir_that_is_not_a_directory(tmp_path: Path, what: str) -> None:
    target = tmp_path / "x"
    if what == "file":
        target.write_text(NODES)
    r = run_cli("lock", target)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr


def test_one_failure_does_not_stop_the_others(tmp_path: Path,
                                              origin: tuple[OriginServer, Path]) -> None:
    server, served = origin
    write_tree(served, {"ok.bin": b"o" * 4000})
    root = tmp_path / "repo"
    write_tree(root / "data", {"f.bin": b"f" * 100})
    docs = {
        "a.yaml": dataset_yaml("a-first", file_source("data")),
        "b.yaml": dataset_yaml("b-broken", http_source(server.url, ["gone.bin"])),
        "c.yaml": dataset_yaml("c-missing", file_source("no/such/dir")),
        "d.yaml": dataset_yaml("d-last", http_source(server.url, ["ok.bin"])),
    }
    make_repo(root, docs)
    r = run_cli("lock", root)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    for ok in ("a-first", "d-last"):
        assert (root / f"locks/{ok}.torrent").is_file()
        assert f"lock: locks/{ok}.torrent" in (root / f"{ok[0]}.yaml").read_text()
        assert f"{ok}: locked" in r.stdout
    for bad in ("b-broken", "c-missing"):
        assert not (root / f"locks/{bad}.torrent").exists()
        assert (root / f"{bad[0]}.yaml").read_text() == docs[f"{bad[0]}.yaml"]
        assert re.search(rf"^{bad}: FAILED", r.stderr, re.M), r.stderr
    assert "gone.bin" in r.stderr
