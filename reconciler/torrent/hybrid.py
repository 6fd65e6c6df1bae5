"""Build and read hybrid (BitTorrent v1 + v2) `.torrent` locks from streamed bytes.

A dataset version is pinned by a `.torrent` "lock". Its bytes come from HTTP/S3 streams, so each
file is read exactly once and hashed on the fly: libtorrent's Python binding can only hash files on
disk (`set_piece_hashes`) and cannot take v2 piece layers (`set_hash2`), so we compute v1 SHA-1
piece hashes and the BEP 52 SHA-256 merkle trees here. Reading a lock back (`read_lock`,
`lock_extra`) is pure Python too and lives in `reconciler.core.lockfile`, re-exported here.

The output is byte-identical to what libtorrent 2.1 writes for the same files with
`create_torrent(sorted(list_files(dir)), piece_size, 0)` + `set_piece_hashes` +
`set_creation_date(0)` + `bencode(generate())` (the tests check this against libtorrent itself),
with one deliberate exception. libtorrent's layout rules, mirrored below:

* files are sorted path element by path element, in UTF-8 byte order (`a/b` < `a-b` < `a.txt`).
  This is the order of the v2 `file tree`, and libtorrent's loader rejects a hybrid torrent whose
  v1 `files` list is in another order ("the v1 and v2 file metadata does not match"). libtorrent
  2.0 sorts this way; 2.1's create_torrent compares whole path strings instead (`a-b` < `a.txt` <
  `a/b`), so for a directory that has a sibling named like it plus a character sorting before
  "/" (space ! " # $ % & ' ( ) * + , - .) 2.1 writes a torrent it cannot load itself. There we
  follow 2.0 (checked byte for byte against libtorrent 2.0.11), everywhere else the orders agree;
* in a torrent with more than one file entry (empty files count), every non-empty file whose end
  is not on a piece boundary is followed by a pad file `<name>/.pad/<N>` (`attr: p`), the last
  file included; with exactly one file there is no pad, so its last v1 piece is hashed unpadded;
* empty files get neither a pad file nor a `pieces root`;
* `piece layers` is always present, with entries only for files of two or more pieces;
* for a file smaller than one piece, its block hashes are padded with zero leaves to the next
  power of two (not to a full piece), and that single piece hash is the pieces root.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Mapping, Sequence, cast

from reconciler.core.bencode import Value, bencode
from reconciler.core.lockfile import BLOCK_SIZE, MIN_PIECE_SIZE, lock_extra, read_lock
from reconciler.core.lockfile import merkle_root as _merkle_root
from reconciler.core.lockfile import next_pow2 as _next_pow2
from reconciler.core.lockfile import zero_root as _zero_root
from reconciler.core.paths import check_element as _check_element
from reconciler.core.paths import split_torrent_path as _split_path

__all__ = ["BLOCK_SIZE", "MAX_PIECE_SIZE", "FileHasher", "FileHashes", "build_torrent",
           "check_path", "choose_piece_size", "lock_extra", "read_lock"]

MAX_PIECE_SIZE = 16 * 1024 * 1024
_TARGET_MAX_PIECES = 2000
_HASH_LEN = 32
_ZERO_HASH = bytes(_HASH_LEN)

# Top-level keys `extra` may not set: they belong to the torrent itself, and a creation date would
# make the same content produce different bytes.
_RESERVED_TOP_KEYS = frozenset({"info", "piece layers", "creation date"})

# Paths are checked with core.paths.check_element: a character libtorrent drops or replaces when
# it loads a torrent would make a path read back differently, so build_torrent refuses it.


def choose_piece_size(total_bytes: int) -> int:
    """The smallest power of two in [16 KiB, 16 MiB] giving at most 2000 pieces.

    So an uncapped result gives 1000 < pieces <= 2000: enough pieces to spread a download over
    many peers, few enough that the v1 piece list and v2 piece layers stay small (about 100 KB).
    Below 32 MiB the 16 KiB floor (the v2 block size) wins; above ~32 GiB the 16 MiB cap does.
    Hybrid padding adds up to one piece per file, so with many small files the real count is higher.
    """
    if total_bytes < 0:
        raise ValueError(f"total_bytes must be >= 0, got {total_bytes}")
    piece = MIN_PIECE_SIZE
    while piece < MAX_PIECE_SIZE and total_bytes > _TARGET_MAX_PIECES * piece:
        piece *= 2
    return piece


def _check_piece_size(piece_size: int) -> None:
    if (not isinstance(piece_size, int) or isinstance(piece_size, bool)
            or piece_size < MIN_PIECE_SIZE or piece_size & (piece_size - 1)):
        raise ValueError(f"piece size must be a power of two >= {MIN_PIECE_SIZE}, got {piece_size!r}")


@dataclass(frozen=True)
class FileHashes:
    """Everything a torrent needs to know about one file, computed from a single pass over it."""

    size: int
    v1_pieces: tuple[bytes, ...]  # sha1 digests; the last one over data + zero padding
    piece_layer: bytes  # concatenated sha256 piece hashes (b"" when size <= piece_size)
    pieces_root: bytes  # 32 bytes, b"" for an empty file
    # sha1 of the last partial piece WITHOUT zero padding: libtorrent pads no file in a torrent
    # that has only one file, so that torrent needs this instead of v1_pieces[-1]. b"" when the
    # file ends on a piece boundary (both hashes are the same then) or is empty.
    v1_last_unpadded: bytes = b""


_BATCH = 4 << 20  # bytes of whole pieces per hashing task (or one piece, if larger)
_INFLIGHT = 4  # hashing tasks one FileHasher keeps queued before update() waits for the oldest

_pools: tuple[ThreadPoolExecutor, ThreadPoolExecutor] | None = None
_pools_lock = threading.Lock()


def hash_workers() -> int:
    """CPUs this process may run on (what hashing is sized for)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _shared_pools() -> tuple[ThreadPoolExecutor, ThreadPoolExecutor]:
    """The SHA-1 pool and the SHA-256 leaf pool every FileHasher of the process shares, each
    with half the CPUs (at least one thread): many files hashed at once use every core, and
    no more threads than that compete for the GIL."""
    global _pools
    with _pools_lock:
        if _pools is None:
            half = max(1, (hash_workers() + 1) // 2)
            _pools = (ThreadPoolExecutor(half, thread_name_prefix="syncbit-sha1"),
                      ThreadPoolExecutor(half, thread_name_prefix="syncbit-sha256"))
        return _pools


def _full_root(leaves: list[bytes]) -> bytes:
    """Merkle root of a power-of-two number of leaves (a whole piece: no padding)."""
    sha256 = hashlib.sha256
    while len(leaves) > 1:
        joined = memoryview(b"".join(leaves))
        leaves = [sha256(joined[i:i + 2 * _HASH_LEN]).digest()
                  for i in range(0, len(joined), 2 * _HASH_LEN)]
    return leaves[0]


def _sha1_pieces(view: memoryview, piece_size: int) -> list[bytes]:
    """The SHA-1 of each whole piece of `view` (a multiple of `piece_size` long)."""
    sha1 = hashlib.sha1
    return [sha1(view[p:p + piece_size]).digest() for p in range(0, len(view), piece_size)]


def _v2_roots(view: memoryview, piece_size: int) -> list[bytes]:
    """The v2 piece root (merkle root of the SHA-256 of each 16 KiB block) of each whole piece."""
    sha256 = hashlib.sha256
    return [_full_root([sha256(view[b:b + BLOCK_SIZE]).digest()
                        for b in range(p, p + piece_size, BLOCK_SIZE)])
            for p in range(0, len(view), piece_size)]


class PieceRun:
    """Whole pieces of one file hashed where their bytes arrive: a part of the file read on its
    own thread (engine/threaded_read.py), fed in order in chunks of any size. Its pieces then
    join the file's `FileHasher` (`add_pieces`) in file order. Bytes after the last whole
    piece (the file's partial last piece) are kept for `FileHasher.update`."""

    def __init__(self, piece_size: int) -> None:
        _check_piece_size(piece_size)
        self.piece_size = piece_size
        self.v1: list[bytes] = []
        self.layer: list[bytes] = []
        self.tail = bytearray()  # a partial piece so far

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        at = 0
        while at < len(view):
            whole = (len(view) - at) // self.piece_size * self.piece_size
            if self.tail or not whole:  # joining or starting a partial piece
                take = min(len(view) - at, self.piece_size - len(self.tail))
                self.tail += view[at:at + take]
                if len(self.tail) == self.piece_size:
                    self._whole(memoryview(self.tail))
                    self.tail = bytearray()
                at += take
            else:
                self._whole(view[at:at + whole])
                at += whole

    def _whole(self, pieces: memoryview) -> None:
        self.v1 += _sha1_pieces(pieces, self.piece_size)
        self.layer += _v2_roots(pieces, self.piece_size)


class FileHasher:
    """Hash one file's bytes, fed in chunks of any size, for a hybrid torrent of `piece_size`.

    Computes the v1 SHA-1 piece hashes (the last piece zero-padded to the piece boundary, as the
    hybrid pad file after it implies) and the v2 SHA-256 piece layer and pieces root, so that a
    streamed source never has to be stored or read twice.

    Pieces are independent, so whole pieces are hashed in batches (about 4 MiB) on thread
    pools shared by every hasher of the process (`parallel=True`, the default): a batch's
    SHA-1 on one pool, its SHA-256 leaves and piece roots on the other (hashlib releases the
    GIL while it hashes). One file so takes SHA-1 and SHA-256 side by side on two cores, and
    several files hashed at once spread over every core. SHA-1 is one call per piece; the
    leaves are one call per 16 KiB block, so the GIL changes hands every few microseconds in
    a leaf thread: keeping those threads to half the CPUs, beside SHA-1 threads that rarely
    want the GIL, was 1.4x faster than letting any thread take any task on a loaded 2-core
    machine (bench/hashing.py, in-memory variant). At most `_INFLIGHT` batches per hasher are
    queued (update() then waits for the oldest), which bounds its memory. `update` keeps a
    reference to the bytes it is given until they are hashed, so a mutable buffer (bytearray,
    memoryview) is copied first. `parallel=False` hashes in the calling thread.
    """

    def __init__(self, piece_size: int, *, parallel: bool = True) -> None:
        _check_piece_size(piece_size)
        self._piece_size = piece_size
        self._blocks_per_piece = piece_size // BLOCK_SIZE
        self._batch = max(piece_size, _BATCH // piece_size * piece_size)
        self._pools = _shared_pools() if parallel else None
        self._size = 0
        self._pending: list[bytes] = []  # bytes not yet handed to hashing, in order
        self._pending_len = 0
        self._queued: deque[tuple[Future[list[bytes]], Future[list[bytes]]]] = deque()
        self._v1: list[bytes] = []  # SHA-1 of each whole piece hashed so far
        self._layer: list[bytes] = []  # v2 root of each whole piece hashed so far
        self._finished = False

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if self._finished:
            raise ValueError("update() after finish()")
        if not isinstance(data, bytes):
            data = memoryview(data).cast("B").tobytes()
        if not data:
            return
        self._size += len(data)
        self._pending.append(data)
        self._pending_len += len(data)
        if self._pending_len >= self._batch:
            self._flush()

    def add_pieces(self, v1: list[bytes], layer: list[bytes]) -> None:
        """Whole pieces hashed elsewhere (`PieceRun`), the next ones in file order: only
        before any bytes are pending, so they stay in order."""
        if self._finished or self._pending_len or len(v1) != len(layer):
            raise ValueError("add_pieces() after partial bytes, or with unequal lists")
        while self._queued:
            self._take_oldest()
        self._v1 += v1
        self._layer += layer
        self._size += len(v1) * self._piece_size

    def _flush(self) -> None:
        """Hand the whole pieces pending to hashing; keep the partial piece after them."""
        whole = self._pending_len - self._pending_len % self._piece_size
        if not whole:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        view = memoryview(data)
        rest = data[whole:] if whole < len(data) else b""
        self._pending = [rest] if rest else []
        self._pending_len = len(rest)
        for start in range(0, whole, self._batch):
            part = view[start:min(whole, start + self._batch)]
            if self._pools is None:
                self._v1 += _sha1_pieces(part, self._piece_size)
                self._layer += _v2_roots(part, self._piece_size)
                continue
            while len(self._queued) >= _INFLIGHT:
                self._take_oldest()
            sha1, sha256 = self._pools
            self._queued.append((sha1.submit(_sha1_pieces, part, self._piece_size),
                                 sha256.submit(_v2_roots, part, self._piece_size)))

    def _take_oldest(self) -> None:
        v1, v2 = self._queued.popleft()
        self._v1 += v1.result()
        self._layer += v2.result()

    def finish(self) -> FileHashes:
        if self._finished:
            raise ValueError("finish() called twice")
        self._finished = True
        size = self._size
        if size == 0:
            return FileHashes(size=0, v1_pieces=(), piece_layer=b"", pieces_root=b"")
        self._flush()
        while self._queued:
            self._take_oldest()
        v1, layer = self._v1, self._layer
        unpadded = b""
        if self._pending_len:  # a partial last piece
            tail = b"".join(self._pending)
            sha1 = hashlib.sha1(tail)
            unpadded = sha1.digest()
            sha1.update(bytes(self._piece_size - len(tail)))
            v1.append(sha1.digest())
            view = memoryview(tail)
            leaves = [hashlib.sha256(view[i:i + BLOCK_SIZE]).digest()
                      for i in range(0, len(tail), BLOCK_SIZE)]
            # libtorrent: a file smaller than a piece pads its blocks to the next power of two,
            # a longer file's last piece is padded to a whole piece (zero leaves either way).
            width = _next_pow2(len(leaves)) if size < self._piece_size else self._blocks_per_piece
            layer.append(_merkle_root(leaves + [_ZERO_HASH] * (width - len(leaves)), _ZERO_HASH))
        if len(layer) == 1:
            root, joined = layer[0], b""
        else:
            root = _merkle_root(layer, _zero_root(self._blocks_per_piece))
            joined = b"".join(layer)
        return FileHashes(size=size, v1_pieces=tuple(v1), piece_layer=joined,
                          pieces_root=root, v1_last_unpadded=unpadded)


def check_path(path: str) -> None:
    """ValueError unless `path` is a relative path a torrent can hold (no '..', no '/' first)."""
    _split_path(path)


def _check_hashes(path: str, h: FileHashes, piece_size: int) -> None:
    """Catch hashes computed for another piece size, or built by hand inconsistently."""
    if not isinstance(h, FileHashes):
        raise ValueError(f"{path!r}: expected FileHashes, got {type(h).__name__}")
    pieces = -(-h.size // piece_size) if h.size > 0 else 0
    ok = (h.size >= 0 and len(h.v1_pieces) == pieces and all(len(d) == 20 for d in h.v1_pieces)
          and len(h.piece_layer) == (_HASH_LEN * pieces if pieces > 1 else 0)
          and len(h.pieces_root) == (_HASH_LEN if pieces else 0))
    if not ok:
        raise ValueError(f"{path!r}: hashes do not match a {h.size}-byte file with {piece_size}-byte pieces")


def _to_bencodable(value: object, where: str) -> Value:
    """Strictly convert `extra` to bencodable values, with an error naming where it is not.

    Only dict/list/tuple/str/bytes/int are accepted (bool is refused: it would read back as int).
    """
    if isinstance(value, bool):
        raise ValueError(f"extra{where}: booleans cannot be bencoded (use 0/1)")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (list, tuple)):
        return [_to_bencodable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out: dict[bytes, Value] = {}
        for k, v in value.items():
            if isinstance(k, str):
                key = k.encode("utf-8")
            elif isinstance(k, bytes):
                key = k
            else:
                raise ValueError(f"extra{where}: dict key {k!r} is not a str")
            if key in out:
                raise ValueError(f"extra{where}: duplicate key {k!r}")
            out[key] = _to_bencodable(v, f"{where}[{k!r}]")
        return out
    raise ValueError(f"extra{where}: {type(value).__name__} cannot be bencoded")


def build_torrent(name: str, piece_size: int, files: Sequence[tuple[str, FileHashes]],
                  extra: Mapping[str, object] | None = None) -> bytes:
    """Bencode a hybrid v1+v2 torrent from precomputed hashes, byte-identical to libtorrent's.

    `files` are (posix path relative to the top dir `name`, hashes), in any order; they are sorted
    in the file-tree order libtorrent's loader requires (see the module docstring). `extra` holds additional top-level keys OUTSIDE the info dict
    (e.g. {"syncbit": {...}}), so they never change the info-hash. No creation date is written,
    so the same input always gives the same bytes. Raises ValueError on unsafe or duplicate paths,
    inconsistent hashes, or when every file is empty (libtorrent refuses a zero-length torrent).
    """
    _check_piece_size(piece_size)
    if not isinstance(name, str) or "/" in name:
        raise ValueError(f"torrent name must be a single path element, got {name!r}")
    name_raw = _check_element(name, "torrent name")
    if not files:
        raise ValueError("a torrent needs at least one file")

    entries: list[tuple[str, tuple[bytes, ...], FileHashes]] = []
    for path, hashes in files:
        entries.append((path, _split_path(path), hashes))
        _check_hashes(path, hashes, piece_size)
    # Element by element, in UTF-8 byte order: the order of the v2 `file tree` (a bencoded dict),
    # which libtorrent's loader requires the v1 `files` list to follow (see the module docstring).
    entries.sort(key=lambda e: e[1])

    tree: dict[bytes, Value] = {}
    for path, parts, hashes in entries:
        node = tree
        for part in parts[:-1]:
            # Every value in the tree is a dict (a directory, or {b"": leaf} for a file).
            child = cast("dict[bytes, Value]", node.setdefault(part, {}))
            if b"" in child:
                raise ValueError(f"{path!r}: a parent directory is also a file")
            node = child
        if parts[-1] in node:
            raise ValueError(f"{path!r}: duplicate path, or a file that is also a directory")
        leaf: dict[bytes, Value] = {b"length": hashes.size}
        if hashes.size:
            leaf[b"pieces root"] = hashes.pieces_root
        node[parts[-1]] = {b"": leaf}

    if sum(h.size for _, _, h in entries) == 0:
        raise ValueError("all files are empty; a torrent needs at least one byte of data")

    pad_tail = len(entries) > 1  # libtorrent never pads a torrent's only file
    v1_files: list[Value] = []
    pieces: list[bytes] = []
    layers: dict[bytes, Value] = {}
    for path, parts, hashes in entries:
        v1_files.append({b"length": hashes.size, b"path": list(parts)})
        tail = hashes.size % piece_size
        if pad_tail and tail:
            pad = piece_size - tail
            v1_files.append({b"attr": b"p", b"length": pad, b"path": [b".pad", str(pad).encode()]})
            pieces.extend(hashes.v1_pieces)
        elif tail:
            if len(hashes.v1_last_unpadded) != 20:
                raise ValueError(f"{path!r}: FileHashes lacks v1_last_unpadded, needed when the "
                                 "torrent has a single file (use FileHasher)")
            pieces.extend(hashes.v1_pieces[:-1])
            pieces.append(hashes.v1_last_unpadded)
        else:
            pieces.extend(hashes.v1_pieces)
        if hashes.piece_layer:
            layers.setdefault(hashes.pieces_root, hashes.piece_layer)

    info: dict[bytes, Value] = {
        b"file tree": tree,
        b"files": v1_files,
        b"meta version": 2,
        b"name": name_raw,
        b"piece length": piece_size,
        b"pieces": b"".join(pieces),
    }
    top: dict[bytes, Value] = {}
    for key, value in (extra or {}).items():
        if not isinstance(key, str):
            raise ValueError(f"extra key {key!r} is not a str")
        if key in _RESERVED_TOP_KEYS:
            raise ValueError(f"extra may not set the top-level key {key!r}")
        top[key.encode("utf-8")] = _to_bencodable(value, f"[{key!r}]")
    top[b"info"] = info
    top[b"piece layers"] = layers
    return bencode(top)
