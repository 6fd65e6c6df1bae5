"""Hashing throughput of `lock` against libtorrent's own `create_torrent`, in one run.

    python -m bench.hashing [--size-mib 256] [--files 4] [--repeat 3] [--dir DIR]

Measures, on files written to a temporary directory (so read from the page cache, as
libtorrent's `set_piece_hashes` reads them):

1. libtorrent `create_torrent` (hybrid) + `set_piece_hashes` on one file;
2. `FileHasher` as it was before the hashing work (SHA-1 and SHA-256 one after the other per
   16 KiB block, one thread; a copy is kept below as `OldFileHasher`), the new one in the
   calling thread only (`parallel=False`), and the new one on its thread pool, on the same file;
3. `build_lock` over `--files` files of the same total size (a `file` source), against
   libtorrent on the same directory;
4. `verify_content` on those files: the full read-back a finished download used to get, and
   the size checks it gets now when libtorrent hashed every piece itself;
5. where the pool's CPU goes for one file (SHA-1 tasks, SHA-256 leaf tasks, the whole
   process, per-thread clocks that only run on a CPU), and the wall rate that allows with
   free cores: a bound for machines whose cores are busy with other work when this runs.

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
import threading
import time
from pathlib import Path
from typing import Callable

import libtorrent as lt

from reconciler.adapters.sources import OriginContext
from reconciler.core.lockfile import BLOCK_SIZE, merkle_root, next_pow2, zero_root
from reconciler.engine.locking import build_lock
from reconciler.model.desired import Dataset, FileSource, Placement
from reconciler.torrent import hybrid
from reconciler.torrent.hybrid import FileHasher, FileHashes, build_torrent, choose_piece_size, hash_workers
from reconciler.torrent.verify import verify_content

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


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of the whole process, result) of one call."""
    t, c = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - t, time.process_time() - c, result


def thread_cpu_split(piece: int, path: Path) -> tuple[float, float, float]:
    """CPU seconds of one pool hashing of `path`: (in SHA-1 tasks, in SHA-256 leaf tasks,
    whole process). Each pool thread's own clock (time.thread_time) runs only while it is on
    a CPU, so this does not depend on the load of a shared machine."""
    spent = {"sha1": 0.0, "leaves": 0.0}
    lock = threading.Lock()
    real = {"sha1": hybrid._sha1_pieces, "leaves": hybrid._v2_roots}

    def clocked(kind: str) -> Callable[[memoryview, int], list[bytes]]:
        def run(view: memoryview, piece_size: int) -> list[bytes]:
            t = time.thread_time()
            try:
                return real[kind](view, piece_size)
            finally:
                with lock:
                    spent[kind] += time.thread_time() - t
        return run

    hybrid._sha1_pieces, hybrid._v2_roots = clocked("sha1"), clocked("leaves")  # type: ignore[assignment]
    try:
        c = time.process_time()
        hash_with(lambda: FileHasher(piece), path)
        total = time.process_time() - c
    finally:
        hybrid._sha1_pieces, hybrid._v2_roots = real["sha1"], real["leaves"]  # type: ignore[assignment]
    return spent["sha1"], spent["leaves"], total


def info_hash(torrent: bytes) -> str:
    return str(lt.torrent_info(lt.bdecode(torrent)).info_hashes().v2)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="where to write the test files")
    args = ap.parse_args()
    size = args.size_mib * MiB
    n = max(1, args.files)
    tmp = Path(tempfile.mkdtemp(prefix="syncbit-bench-hash-", dir=args.dir))
    load = os.getloadavg()[0]
    try:
        one, many = tmp / "one" / "ds", tmp / "many" / "ds"
        write_files(one, {"big.bin": size})
        write_files(many, {f"f{i:02d}.bin": size // n for i in range(n)})
        piece, piece_many = choose_piece_size(size), choose_piece_size(size // n * n)
        d = Dataset(name="ds", version="1", source=FileSource(str(many)),
                    placement=Placement(all=True), path="ds")

        async def lock() -> bytes:
            async with OriginContext(tmp) as ctx:
                return await build_lock(d, ctx)

        ref_one = libtorrent_hybrid(one, piece)
        ref_many = libtorrent_hybrid(many, piece_many)
        torrent = asyncio.run(lock())
        assert info_hash(torrent) == info_hash(ref_many), "build_lock differs from libtorrent"

        def file_hasher(make: Callable[[], object]) -> Callable[[], object]:
            def run() -> object:
                h = hash_with(make, one / "big.bin")
                got = info_hash(build_torrent("ds", piece, [("big.bin", h)]))
                assert got == info_hash(ref_one), "FileHasher differs from libtorrent"
                return h
            return run

        LT1, LTN = "libtorrent create_torrent, 1 file", f"libtorrent create_torrent, {n} files"
        OLD, NEW1, NEWP = ("FileHasher old (acde1ac), 1 file", "FileHasher new, 1 thread, 1 file",
                           "FileHasher new, pool, 1 file")
        cases: dict[str, tuple[str, Callable[[], object]]] = {
            LT1: (LT1, lambda: libtorrent_hybrid(one, piece)),
            OLD: (LT1, file_hasher(lambda: OldFileHasher(piece))),
            NEW1: (LT1, file_hasher(lambda: FileHasher(piece, parallel=False))),
            NEWP: (LT1, file_hasher(lambda: FileHasher(piece))),
            LTN: (LTN, lambda: libtorrent_hybrid(many, piece_many)),
            f"build_lock, {n} files (file source)": (LTN, lambda: asyncio.run(lock())),
            # What a finished download's verification costs: the full read-back it used to
            # be, and the size checks it is now when libtorrent hashed every piece itself.
            f"verify_content, full read-back, {n} files": (
                LTN, lambda: verify_content(torrent, many)),
            f"verify_content, sizes only, {n} files": (
                LTN, lambda: verify_content(torrent, many, read=())),
        }
        wall: dict[str, float] = {}
        cpu: dict[str, float] = {}
        for _ in range(args.repeat):  # interleaved, so a burst of load hits every case alike
            for label, (_, fn) in cases.items():
                w, c, result = timed(fn)
                if label.startswith("verify_content"):
                    assert result == [], result
                wall[label] = min(wall.get(label, w), w)
                cpu[label] = min(cpu.get(label, c), c)

        print(f"nproc {os.cpu_count()}, usable {hash_workers()}, load average {load:.1f} "
              f"-> {os.getloadavg()[0]:.1f}; {args.size_mib} MiB; best of {args.repeat}")
        print(f"{'':42} {'MiB/s':>8} {'x libtorrent':>13} {'MiB/CPU-s':>10}")
        for label, (ref, _) in cases.items():
            print(f"{label:42} {size / MiB / wall[label]:8.0f} "
                  f"{wall[ref] / wall[label]:13.2f} {size / MiB / max(cpu[label], 1e-9):10.0f}")
        print(f"FileHasher new/old (wall): 1 thread {wall[OLD] / wall[NEW1]:.2f}x, "
              f"pool {wall[OLD] / wall[NEWP]:.2f}x")
        # Where the pool's CPU goes, and what that allows with free cores: the SHA-256 leaf
        # thread and the rest (SHA-1 thread, reading, the caller) can at best run side by
        # side, so wall >= max(leaf CPU, all CPU / cores).
        splits = [thread_cpu_split(piece, one / "big.bin") for _ in range(args.repeat)]
        sha1_s, leaf_s, total_s = (min(x[i] for x in splits) for i in range(3))
        cores = hash_workers()
        bound = max(leaf_s, total_s / cores)
        print(f"pool CPU for 1 file: SHA-1 tasks {sha1_s:.3f}s, SHA-256 leaf tasks {leaf_s:.3f}s, "
              f"process {total_s:.3f}s; with {cores} free cores at best "
              f"{size / MiB / bound:.0f} MiB/s = {cpu[LT1] / bound:.2f}x libtorrent's "
              f"{size / MiB / cpu[LT1]:.0f} MiB per CPU-s (its wall rate on a free core)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
