"""Is a torrent a peer offers for an unlocked dataset what the source holds now?

An unlocked dataset has no committer's lock to pin it, so a torrent fetched from a peer is
trusted only as far as the source confirms it: its files (names and sizes) must be exactly what
the source lists, it must say it was read from this very source (`describe()`: type, bucket,
repo, commit...), and the revisions it recorded for each file (HTTP ETag/Last-Modified, S3
ETag/versionId, HF commit/blob id/sha256, file mtime) must be what the source reports now. A
peer cannot make a node download bytes the source does not list; a source that changed since
the torrent was built makes it stale, and the node builds or waits as usual.

What this cannot see: a torrent that copies a listing exactly but hashes other bytes (the
revisions are the source's labels, not hashes of the pieces). The bytes of such a torrent are
still what peers serve; only a lock (`syncbit-reconcile lock`) pins the content itself.

Pure: the listing is read by the caller (engine/pinning.py).
"""

from __future__ import annotations

from typing import Mapping, Protocol, Sequence

from reconciler.model.desired import LockFile

_SHOWN = 3  # files named in a reason, at most


class Listed(Protocol):
    """One file as the source lists it (adapters' `OriginFile`)."""

    @property
    def path(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def revision(self) -> Mapping[str, object]: ...


def _norm(d: Mapping[str, object]) -> dict[str, object]:
    """Without None values: a bencoded torrent cannot record None, so absent == None."""
    return {k: v for k, v in d.items() if v is not None}


def _diff(recorded: Mapping[str, object], now: Mapping[str, object]) -> str:
    keys = sorted(set(recorded) | set(now))
    return ", ".join(f"{k} {recorded.get(k)!r} in the torrent, {now.get(k)!r} now"
                     for k in keys if recorded.get(k) != now.get(k))


def _some(names: Sequence[str]) -> str:
    more = len(names) - _SHOWN
    return ", ".join(names[:_SHOWN]) + (f" and {more} more" if more > 0 else "")


def cross_check(lock: LockFile, extra: Mapping[str, object], dataset: str,
                source: Mapping[str, object], listing: Sequence[Listed]) -> str | None:
    """None when the torrent (`lock`, its top-level `extra` keys) agrees with the source's
    `listing` and `source` (the origin's `describe()` after listing); else why not, in words
    that name files and revision labels but never a credential."""
    meta = extra.get("syncbit")
    if not isinstance(meta, Mapping):
        return "it records no source (not a torrent syncbit built)"
    if meta.get("dataset") != dataset:
        return f"it records dataset {meta.get('dataset')!r}, not {dataset!r}"
    recorded_source = meta.get("source")
    if not isinstance(recorded_source, Mapping):
        return "it records no source"
    if _norm(recorded_source) != _norm(source):
        return f"it was read from another source ({_diff(_norm(recorded_source), _norm(source))})"

    have = dict(lock.files)
    listed = {f.path: f for f in listing}
    missing = sorted(set(listed) - set(have))
    if missing:
        return f"the source lists files the torrent lacks: {_some(missing)}"
    unknown = sorted(set(have) - set(listed))
    if unknown:
        return f"the torrent has files the source does not list: {_some(unknown)}"
    sized = sorted(p for p, f in listed.items() if f.size != have[p])
    if sized:
        return "file sizes differ from the source: " + _some(
            [f"{p} ({have[p]} in the torrent, {listed[p].size} at the source)" for p in sized])

    revisions = meta.get("revision")
    if not isinstance(revisions, Mapping):
        return "it records no source revisions"
    for p in sorted(listed):
        rec = revisions.get(p)
        if not isinstance(rec, Mapping):
            return f"it records no source revision of {p}"
        if _norm(rec) != _norm(listed[p].revision):
            return (f"the source reports other revisions (changed since, or forged): {p}: "
                    f"{_diff(_norm(rec), _norm(listed[p].revision))}")
    return None
