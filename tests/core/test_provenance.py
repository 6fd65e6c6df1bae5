"""`cross_check`: a peer's torrent of an unlocked dataset against the source's own listing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from reconciler.core.lockfile import lock_extra, read_lock
from reconciler.core.provenance import cross_check
from reconciler.torrent.hybrid import FileHasher, build_torrent, choose_piece_size

SOURCE = {"type": "http", "baseUrl": "http://127.0.0.1:1/w"}


@dataclass(frozen=True)
class F:
    path: str
    size: int
    revision: Mapping[str, object] = field(default_factory=dict)


def rev(path: str, size: int) -> dict[str, object]:
    return {"size": size, "etag": f'"{path}-1"', "lastModified": "Mon, 01 Jan 2024 00:00:00 GMT"}


GOOD = {"a.bin": b"a" * 40_000, "sub/b.bin": b"b" * 1000}
LISTING = [F(p, len(d), rev(p, len(d))) for p, d in sorted(GOOD.items())]


def torrent(files: dict[str, bytes], *, dataset: str = "w", source: Mapping[str, object] = SOURCE,
            revisions: Mapping[str, object] | None = None, meta: object = "default") -> bytes:
    ps = choose_piece_size(sum(map(len, files.values())))
    hashed = []
    for p, data in files.items():
        h = FileHasher(ps)
        h.update(data)
        hashed.append((p, h.finish()))
    if meta == "default":
        meta = {"dataset": dataset, "source": dict(source), "revision": dict(
            revisions if revisions is not None else
            {p: rev(p, len(d)) for p, d in files.items()})}
    return build_torrent("w", ps, hashed, {"syncbit": meta} if meta is not None else None)


def check(data: bytes, listing: list[F] = LISTING,
          source: Mapping[str, object] = SOURCE) -> str | None:
    return cross_check(read_lock(data, "t"), lock_extra(data), "w", source, listing)


def test_the_torrent_built_from_the_source_is_accepted():
    assert check(torrent(GOOD)) is None


def test_the_same_bytes_read_from_the_source_in_any_listing_order():
    assert check(torrent(GOOD), list(reversed(LISTING))) is None


def test_other_bytes_under_other_sizes_or_names_are_refused():
    assert "sizes differ" in check(torrent({**GOOD, "a.bin": b"x" * 50_000}))
    assert "the torrent has files the source does not list: evil.bin" in check(
        torrent({**GOOD, "evil.bin": b"e"}))
    assert "the source lists files the torrent lacks: sub/b.bin" in check(
        torrent({"a.bin": GOOD["a.bin"]}))


def test_same_names_and_sizes_with_forged_or_missing_revisions_are_refused():
    forged = {p: {**rev(p, len(d)), "etag": '"forged"'} for p, d in GOOD.items()}
    why = check(torrent({"a.bin": b"z" * 40_000, "sub/b.bin": GOOD["sub/b.bin"]},
                        revisions=forged))
    assert why is not None and "other revisions" in why and "forged" in why
    assert "no source revision of a.bin" in check(torrent(GOOD, revisions={}))
    assert "records no source" in check(torrent(GOOD, meta=None))


def test_a_source_that_changed_since_the_torrent_was_built_makes_it_stale():
    now = [F(f.path, f.size, {**f.revision, "etag": '"v2"'}) if f.path == "a.bin" else f
           for f in LISTING]
    why = check(torrent(GOOD), now)
    assert why is not None and why.startswith("the source reports other revisions (changed since, or forged): a.bin")
    assert '\'"v2"\' now' in why


def test_another_source_or_dataset_is_refused():
    assert "another source" in check(torrent(GOOD, source={**SOURCE, "baseUrl": "http://x/"}))
    hf = {"type": "hf", "repo": "o/r", "repoType": "model", "revision": "main", "commit": "a" * 40}
    why = check(torrent(GOOD, source=hf), source={**hf, "commit": "b" * 40})
    assert why is not None and "commit" in why
    assert "records dataset 'other'" in check(torrent(GOOD, dataset="other"))


def test_absent_values_equal_none_as_a_torrent_cannot_record_none():
    listing = [F(f.path, f.size, {**f.revision, "versionId": None}) for f in LISTING]
    assert check(torrent(GOOD), listing) is None
