"""Read a `.torrent` lock without libtorrent: parse, validate, and extract what the model needs.

`syncbit-reconcile validate` and the check of a torrent fetched from a peer only need the facts a
lock pins (info-hashes, top directory, files and sizes); loading libtorrent for that made
validation slow to start and tied the pure layers to a native library. This parser accepts only
what libtorrent would load to the same `LockFile` (tests compare the two) and is stricter where
that is cheap: canonical bencoding, the exact hybrid layout `build_torrent` and libtorrent write.

A lock is a hybrid BitTorrent v1+v2 torrent (BEP 3 + BEP 52) of a directory:
* `info` has the v1 `pieces` and `files` and the v2 `meta version: 2` and `file tree`;
* the v1 file list is the file tree in order, each non-empty file not ending on a piece boundary
  followed by a pad file `.pad/<N>` (`attr: p`) when there is more than one file;
* `piece length` is a power of two >= 16 KiB, `pieces` holds one SHA-1 per v1 piece;
* `piece layers` holds, for each file longer than one piece, its SHA-256 piece hashes, whose
  merkle root is the file's `pieces root`.
The info-hashes are SHA-1 (v1) and SHA-256 (v2) of the exact bytes of the `info` dict.
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

from reconciler.core.bencode import BencodeError, Value, bdecode_spans
from reconciler.core.paths import check_raw_element
from reconciler.model.desired import LockFile

BLOCK_SIZE = 16 * 1024
MIN_PIECE_SIZE = BLOCK_SIZE
_HASH_LEN = 32
_ZERO_HASH = bytes(_HASH_LEN)
_TOP_KEYS = (b"info", b"piece layers")

_zero_roots: list[bytes] = [_ZERO_HASH]  # _zero_roots[k]: root of 2**k zero leaves


def next_pow2(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p


def zero_root(num_leaves: int) -> bytes:
    """Root of a merkle tree of `num_leaves` (a power of two) all-zero leaves (libtorrent's merkle_pad)."""
    depth = num_leaves.bit_length() - 1
    while len(_zero_roots) <= depth:
        _zero_roots.append(hashlib.sha256(_zero_roots[-1] * 2).digest())
    return _zero_roots[depth]


def merkle_root(leaves: Sequence[bytes], pad: bytes) -> bytes:
    """BEP 52 root: leaves padded with `pad` up to a power of two, then hashed pairwise."""
    layer = list(leaves)
    width = next_pow2(len(layer))
    while width > 1:
        if len(layer) % 2:
            layer.append(pad)
        layer = [hashlib.sha256(layer[i] + layer[i + 1]).digest() for i in range(0, len(layer), 2)]
        pad = hashlib.sha256(pad + pad).digest()
        width //= 2
    return layer[0]


def _invalid(why: str) -> ValueError:
    return ValueError(f"not a valid torrent: {why}")


def _decode_top(data: bytes) -> tuple[dict[bytes, Value], bytes | None]:
    """The top-level dict and the raw bytes of its `info` value (None if absent)."""
    try:
        decoded = bdecode_spans(data)
    except BencodeError:
        decoded = None
    if decoded is None or not isinstance(decoded.value, dict):
        raise ValueError("not a bencoded torrent")
    span = decoded.spans.get(b"info")
    return decoded.value, (bytes(data[span[0]:span[1]]) if span else None)


def _int(d: dict[bytes, Value], key: bytes, where: str) -> int:
    v = d.get(key)
    if not isinstance(v, int) or v < 0:
        raise _invalid(f"{where}: missing or invalid {key.decode()!r}")
    return v


def _walk_tree(node: Value, prefix: tuple[str, ...], out: list[tuple[str, int, bytes]],
               piece_length: int) -> None:
    """Files of a v2 `file tree` in its (sorted) order, as (path, length, pieces root)."""
    if not isinstance(node, dict) or not node:
        raise _invalid(f"file tree: {'/'.join(prefix) or 'the root'} is not a non-empty directory")
    for raw, child in node.items():
        if raw == b"":
            raise _invalid(f"file tree: {'/'.join(prefix) or 'the root'} is both a file and a directory")
        name = check_raw_element(raw, "file tree")
        path = (*prefix, name)
        if isinstance(child, dict) and b"" in child:
            leaf = child[b""]
            if len(child) != 1 or not isinstance(leaf, dict):
                raise _invalid(f"file tree: {'/'.join(path)} is both a file and a directory")
            length = _int(leaf, b"length", f"file tree: {'/'.join(path)}")
            attr = leaf.get(b"attr", b"")
            if not isinstance(attr, bytes) or not set(attr) <= set(b"xh"):
                raise _invalid(f"file tree: {'/'.join(path)}: unsupported attr {attr!r}")
            root = leaf.get(b"pieces root", b"")
            if length and (not isinstance(root, bytes) or len(root) != _HASH_LEN
                           or root == _ZERO_HASH):
                raise _invalid(f"file tree: {'/'.join(path)}: missing or invalid 'pieces root'")
            if not length and b"pieces root" in leaf:
                raise _invalid(f"file tree: {'/'.join(path)}: empty file with a 'pieces root'")
            out.append(("/".join(path), length,
                        root if length and isinstance(root, bytes) else b""))
        else:
            _walk_tree(child, path, out, piece_length)


def _v1_files(info: dict[bytes, Value]) -> list[tuple[str, int, bool]]:
    """The v1 `files` list as (path, length, is_pad)."""
    files = info.get(b"files")
    if not isinstance(files, list) or not files:
        raise _invalid("missing or invalid 'files' list")
    out: list[tuple[str, int, bool]] = []
    for i, f in enumerate(files):
        if not isinstance(f, dict):
            raise _invalid(f"files[{i}] is not a dict")
        length = _int(f, b"length", f"files[{i}]")
        parts = f.get(b"path")
        if not isinstance(parts, list) or not parts or not all(isinstance(p, bytes) for p in parts):
            raise _invalid(f"files[{i}]: missing or invalid 'path'")
        if b"path.utf-8" in f and f[b"path.utf-8"] != parts:
            raise _invalid(f"files[{i}]: 'path.utf-8' differs from 'path'")
        path = "/".join(check_raw_element(p, f"files[{i}]") for p in parts
                        if isinstance(p, bytes))  # all are: checked just above
        attr = f.get(b"attr", b"")
        if not isinstance(attr, bytes) or not set(attr) <= set(b"xhp"):
            raise _invalid(f"files[{i}]: unsupported attr {attr!r}")
        out.append((path, length, b"p" in attr))
    return out


def _check_layout(v1: list[tuple[str, int, bool]], tree: list[tuple[str, int, bytes]],
                  piece_length: int) -> None:
    """The v1 list must be the file tree in order, with pad files exactly where libtorrent puts them."""
    expected: list[tuple[str, int, bool]] = []
    for path, length, _ in tree:
        expected.append((path, length, False))
        tail = length % piece_length
        if len(tree) > 1 and tail:
            pad = piece_length - tail
            expected.append((f".pad/{pad}", pad, True))
    if v1 != expected:
        raise _invalid("the v1 and v2 file metadata does not match")


def _check_piece_layers(top: dict[bytes, Value], tree: list[tuple[str, int, bytes]],
                        piece_length: int) -> None:
    layers = top.get(b"piece layers")
    if not isinstance(layers, dict):
        raise _invalid("missing or invalid 'piece layers'")
    pad = zero_root(piece_length // BLOCK_SIZE)
    for path, length, root in tree:
        if length <= piece_length:
            continue
        layer = layers.get(root)
        pieces = -(-length // piece_length)
        if not isinstance(layer, bytes) or len(layer) != _HASH_LEN * pieces:
            raise _invalid(f"piece layers: missing or invalid layer of {path}")
        hashes = [layer[i:i + _HASH_LEN] for i in range(0, len(layer), _HASH_LEN)]
        if merkle_root(hashes, pad) != root:
            raise _invalid(f"piece layers: the layer of {path} does not hash to its pieces root")


def read_lock(data: bytes, path: str) -> LockFile:
    """Parse and validate a lock: it must be a hybrid v1+v2 torrent with a top directory.

    `path` is only recorded (as written in spec.lock). Raises ValueError with a message meant for
    a human (no path in it; the caller knows where the lock came from).
    """
    top, info_raw = _decode_top(data)
    info = top.get(b"info")
    if not isinstance(info, dict) or info_raw is None:
        raise _invalid("missing or invalid 'info' dict")
    has_v1 = isinstance(info.get(b"pieces"), bytes) and (b"files" in info or b"length" in info)
    has_v2 = info.get(b"meta version") == 2 and b"file tree" in info
    if not has_v1 and not has_v2:
        raise _invalid("neither a v1 nor a v2 torrent")
    if not (has_v1 and has_v2):
        raise ValueError(f"not a hybrid v1+v2 torrent (it is {'v1' if has_v1 else 'v2'}-only)")
    if b"files" not in info:
        raise ValueError("single-file torrent; a lock must describe a directory")

    piece_length = info.get(b"piece length")
    if (not isinstance(piece_length, int) or piece_length < MIN_PIECE_SIZE
            or piece_length & (piece_length - 1)):
        raise _invalid(f"'piece length' must be a power of two >= {MIN_PIECE_SIZE}")
    name_raw = info.get(b"name")
    if not isinstance(name_raw, bytes):
        raise _invalid("missing or invalid 'name'")
    if b"name.utf-8" in info and info[b"name.utf-8"] != name_raw:
        raise _invalid("'name.utf-8' differs from 'name'")
    name = check_raw_element(name_raw, "name")

    tree: list[tuple[str, int, bytes]] = []
    _walk_tree(info[b"file tree"], (), tree, piece_length)
    v1 = _v1_files(info)
    _check_layout(v1, tree, piece_length)
    v1_bytes = sum(length for _, length, _ in v1)
    if v1_bytes == 0:
        raise _invalid("no data: every file is empty")
    pieces = info[b"pieces"]
    assert isinstance(pieces, bytes)
    if len(pieces) != 20 * -(-v1_bytes // piece_length):
        raise _invalid("'pieces' does not hold one SHA-1 hash per piece")
    _check_piece_layers(top, tree, piece_length)

    files = tuple((p, n) for p, n, _ in tree)
    return LockFile(
        path=path,
        info_hash=hashlib.sha256(info_raw).hexdigest(),
        info_hash_v1=hashlib.sha1(info_raw).hexdigest(),
        name=name,
        total_bytes=sum(n for _, n in files),
        files=files,
    )


def _from_bencoded(value: Value) -> object:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    if isinstance(value, list):
        return [_from_bencoded(v) for v in value]
    if isinstance(value, dict):
        return {_from_bencoded(k): _from_bencoded(v) for k, v in value.items()}
    return value


def lock_extra(data: bytes) -> dict[str, Any]:
    """The top-level keys outside `info`/`piece layers`, i.e. the `extra` given to build_torrent.

    Byte strings are decoded to str where they are valid UTF-8 (bytes otherwise); {} if none.
    """
    top, _ = _decode_top(data)
    return {str(_from_bencoded(k)): _from_bencoded(v) for k, v in top.items()
            if k not in _TOP_KEYS}
