"""Hashing throughput of `lock` against libtorrent's own `create_torrent`, in one run.

    python -m bench.hashing [--size-mib 256] [--files 4] [--repeat 3] [--dir DIR]

Measures, on files written to a temporary directory (so read from the page cache, as
libtorrent's `set_piece_hashes` reads them):

1. libtorrent `create_torrent` (hybrid) + `set_piece_hashes` on one file;
2. `FileHasher` as it was before the hashing work (SHA-1 and SHA-256 one after the other per
   16 KiB block, one thread; a copy is kept below as `OldFileHasher`), the new one in the
   calling thread only (`parallel=False`), and the new one on its thread pool, on the same file;
3. `build_lock` over `--files` files of the same total size (a `file` source), against
   libtorrent on the same directory.

Each figure is the best of `--repeat` runs: wall MiB/s, its ratio to libtorrent, and MiB per
CPU-second of the whole process (all threads; what hashing costs, whatever the load). The
machine may be shared: `nproc` and the load average are printed, and multi-core figures are
only as good as the cores that were free.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import libtorrent as lt

from reconciler.adapters.sources import OriginContext
from reconciler.core.lockfile import BLOCK_SIZE, merkle_root, next_pow2, zero_root
from reconciler.engine.locking import build_lock
from reconciler.model.desired import Dataset, FileSource, Placement
from reconciler.torrent.hybrid import FileHasher, FileHashes, build_torrent, choose_piece_size, hash_workers

MiB = 1 << 20
READ = 4 * MiB
_ZERO = bytes(32)


class OldFileHasher:
    """FileHasher as of commit acde1ac (before this benchmark), for the before/after figure."""

    def __init__(self, piece_size: int) -> None:
        self._piece_size = piece_size
        self._blocks_per_piece = piece_size // BLOCK_SIZE
        self._size = 0
        self._sha1 = hashlib.sha1()
        self._block = hashlib.sha256()
        self._block_fill = 0
        self._leaves: list[bytes] = []
        self._v1: list[bytes] = []
        self._layer: list[bytes] = []

    def update(self, data: bytes) -> None:
        view = memoryview(data).cast("B")
        end = len(view)
        pos = 0
        self._size += end
        while pos < end:
            take = min(end - pos, BLOCK_SIZE - self._block_fill)
            chunk = view[pos:pos + take]
            pos += take
            self._sha1.update(chunk)
            if take == BLOCK_SIZE:
                self._leaves.append(hashlib.sha256(chunk).digest())
            else:
                self._block.update(chunk)
                self._block_fill += take
                if self._block_fill < BLOCK_SIZE:
                    continue
                self._leaves.append(self._block.digest())
                self._block = hashlib.sha256()
                self._block_fill = 0
            if len(self._leaves) == self._blocks_per_piece:
                self._v1.append(self._sha1.digest())
                self._sha1 = hashlib.sha1()
                self._layer.append(merkle_root(self._leaves, _ZERO))
                self._leaves = []

    def finish(self) -> FileHashes:
        size = self._size
        unpadded = b""
        if self._block_fill:
            self._leaves.append(self._block.digest())
        if self._leaves:
            unpadded = self._sha1.digest()
            self._sha1.update(bytes(self._piece_size - size % self._piece_size))
            self._v1.append(self._sha1.digest())
            width = next_pow2(len(self._leaves)) if size < self._piece_size else self._blocks_per_piece
            self._layer.append(merkle_root(self._leaves + [_ZERO] * (width - len(self._leaves)), _ZERO))
        if len(self._layer) == 1:
            root, layer = self._layer[0], b""
        else:
            root = merkle_root(self._layer, zero_root(self._blocks_per_piece))
            layer = b"".join(self._layer)
        return FileHashes(size=size, v1_pieces=tuple(self._v1), piece_layer=layer,
                          pieces_root=root, v1_last_unpadded=unpadded)


def write_files(top: Path, sizes: dict[str, int]) -> None:
    top.mkdir(parents=True, exist_ok=True)
    for rel, size in sizes.items():
        with open(top / rel, "wb") as f:
            left = size
            while left:
                n = min(left, 16 * MiB)
                f.write(os.urandom(n))
                left -= n


def libtorrent_hybrid(top: Path, piece_size: int) -> bytes:
    entries = sorted(lt.list_files(str(top)), key=lambda e: e.filename)
    ct = lt.create_torrent(entries, piece_size, 0)
    lt.set_piece_hashes(ct, str(top.parent))
    ct.set_creation_date(0)
    return lt.bencode(ct.generate())


def hash_with(make: Callable[[], object], path: Path) -> FileHashes:
    h = make()
    with open(path, "rb") as f:
        while chunk := f.read(READ):
            h.update(chunk)  # type: ignore[attr-defined]
    return h.finish()  # type: ignore[attr-defined, no-any-return]


CPU: dict[str, float] = {}  # label -> least CPU seconds of the process (all its threads)


def best(repeat: int, fn: Callable[[], object], label: str = "") -> tuple[float, object]:
    times, cpus, result = [], [], None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        result = fn()
        times.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    CPU[label] = min(cpus)
    return min(times), result


def info_hash(torrent: bytes) -> str:
    return str(lt.torrent_info(lt.bdecode(torrent)).info_hashes().v2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="where to write the test files")
    args = ap.parse_args()
    size = args.size_mib * MiB
    tmp = Path(tempfile.mkdtemp(prefix="syncbit-bench-hash-", dir=args.dir))
    print(f"nproc {os.cpu_count()}, usable {hash_workers()}, load average "
          f"{os.getloadavg()[0]:.1f}; {args.size_mib} MiB; best of {args.repeat}")
    try:
        one = tmp / "one" / "ds"
        write_files(one, {"big.bin": size})
        piece = choose_piece_size(size)
        rows: list[tuple[str, float]] = []
        label = "libtorrent create_torrent, 1 file"
        t_lt, ref = best(args.repeat, lambda: libtorrent_hybrid(one, piece), label)
        rows.append((label, t_lt))
        want = info_hash(ref)  # type: ignore[arg-type]
        for label, make in (("FileHasher old (acde1ac), 1 file", lambda: OldFileHasher(piece)),
                            ("FileHasher new, 1 thread, 1 file", lambda: FileHasher(piece, parallel=False)),
                            ("FileHasher new, pool, 1 file", lambda: FileHasher(piece))):
            t, h = best(args.repeat, lambda make=make: hash_with(make, one / "big.bin"), label)
            got = info_hash(build_torrent("ds", piece, [("big.bin", h)]))  # type: ignore[list-item]
            assert got == want, f"{label}: info-hash {got} != libtorrent's {want}"
            rows.append((label, t))

        many = tmp / "many" / "ds"
        n = max(1, args.files)
        write_files(many, {f"f{i:02d}.bin": size // n for i in range(n)})
        label = f"libtorrent create_torrent, {n} files"
        t_lt_many, ref_many = best(args.repeat, lambda: libtorrent_hybrid(
            many, choose_piece_size(size // n * n)), label)
        rows.append((label, t_lt_many))
        d = Dataset(name="ds", version="1", source=FileSource(str(many)),
                    placement=Placement(all=True), path="ds")

        async def lock() -> bytes:
            async with OriginContext(tmp) as ctx:
                return await build_lock(d, ctx)
        label = f"build_lock, {n} files (file source)"
        t_lock, torrent = best(args.repeat, lambda: asyncio.run(lock()), label)
        assert info_hash(torrent) == info_hash(ref_many), "build_lock differs from libtorrent"  # type: ignore[arg-type]
        rows.append((label, t_lock))

        base = {1: t_lt, 2: t_lt_many}
        print(f"{'':40} {'MiB/s':>8} {'x libtorrent':>13} {'MiB/CPU-s':>10}")
        for label, t in rows:
            ref_t = base[1] if "1 file" in label else base[2]
            print(f"{label:40} {size / MiB / t:8.0f} {ref_t / t:13.2f} "
                  f"{size / MiB / max(CPU[label], 1e-9):10.0f}")
        old, new1, newp = rows[1][1], rows[2][1], rows[3][1]
        print(f"FileHasher new/old: 1 thread {old / new1:.2f}x, pool {old / newp:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
