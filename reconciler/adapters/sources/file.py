"""`file` sources: a local or NFS directory, or one file.

On a node they are confined to the node config's `publishRoots` (default: the state repo):
whoever can commit decides what a node holds, but not what it may read. The source itself, and
every file in it after symlinks are resolved, must lie under a publish root; anything else is
refused before a byte is read. Symlinks inside are followed within the roots (a Hugging Face
cache snapshot is symlinks into `../../blobs`). `lock`, run by a person with their own rights,
is not confined.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Callable, Sequence

from reconciler.core.paths import is_clean_relative
from reconciler.model.desired import FileSource
from reconciler.adapters.sources.base import Origin, OriginError, OriginFile, chunks
from reconciler.adapters.sources.threaded import Reading, Stopped

#: Bytes per `preadv` of a range read on a thread: whole pieces of any piece size up to it, so
#: a thread hashes them straight from its buffer. One buffer per range in flight (at most the
#: range's length): 16 MiB for the 4 threads of a 2-core `lock`, 256 MiB if a slow NFS had
#: 64 ranges at once; 1 MiB buffers were 3-4 % slower (1,043-1,189 against 1,081-1,237 MiB/s).
FILE_BUFFER = 4 << 20


class FileOrigin(Origin):
    kind = "file"

    def __init__(self, source: FileSource, state_root: Path,
                 confine: Sequence[Path] | None = None) -> None:
        p = Path(source.path)
        self.root = p if p.is_absolute() else state_root / p
        self.source = source
        self.confine = None if confine is None else tuple(confine)

    def _check_confined(self, path: Path, what: str) -> Path:
        """`path` with symlinks resolved, if it lies under a publish root; OriginError if not."""
        real = Path(os.path.realpath(path))
        if self.confine is None:
            return real
        roots = [Path(os.path.realpath(r)) for r in self.confine]
        if not any(real == r or real.is_relative_to(r) for r in roots):
            shown = ", ".join(str(r) for r in self.confine) or "none"
            raise OriginError(f"file source {self.source.path}: {what} resolves to {real}, "
                              f"outside this node's publishRoots ({shown})")
        return real

    def _files(self) -> list[tuple[str, Path]]:
        self._check_confined(self.root, "the source")
        if self.root.is_file():
            return [(self.root.name, self.root)]
        if not self.root.is_dir():
            raise OriginError(f"file source {self.source.path}: no such file or directory")
        # Symlinks are followed, to files (a Hugging Face cache snapshot is symlinks into its
        # blobs) and to directories alike, except a directory that is its own ancestor (a loop).
        def fail(e: OSError) -> None:
            raise OriginError(f"file source {self.source.path}: cannot read {e.filename}: "
                              f"{e.strerror}")

        out = []
        st = self.root.stat()
        ancestors = {str(self.root): frozenset({(st.st_dev, st.st_ino)})}
        for dirpath, dirnames, filenames in os.walk(self.root, onerror=fail, followlinks=True):
            chain = ancestors.pop(dirpath)
            keep = []
            for d in sorted(dirnames):
                if d == ".git":
                    continue
                st = os.stat(os.path.join(dirpath, d))
                if (st.st_dev, st.st_ino) not in chain:
                    keep.append(d)
                    ancestors[os.path.join(dirpath, d)] = chain | {(st.st_dev, st.st_ino)}
            dirnames[:] = keep
            for f in filenames:
                full = Path(dirpath) / f
                if full.is_file():
                    rel = full.relative_to(self.root).as_posix()
                    self._check_confined(full, rel)
                    out.append((rel, full))
        return sorted(out)

    async def list_files(self) -> list[OriginFile]:
        def scan() -> list[OriginFile]:
            res = []
            for rel, full in self._files():
                st = full.stat()
                res.append(OriginFile(rel, st.st_size, {"size": st.st_size, "mtime": int(st.st_mtime)}))
            return res
        return await asyncio.to_thread(scan)

    def _resolve(self, path: str) -> Path:
        if self.root.is_file():
            if path != self.root.name:
                raise OriginError(f"file source {self.source.path}: no file {path}")
            return self.root
        # Checked as written, not resolved: symlinks inside the source are the dataset's own
        # (list_files follows them), but a request must not climb out with `..` or a root.
        if not is_clean_relative(path):
            raise OriginError(f"file source {self.source.path}: {path} escapes the source")
        return self.root.joinpath(*path.split("/"))

    def open(self, path: str) -> int:
        """A read-only descriptor of `path`, confined as the listing is: the resolved path,
        opened without following a symlink swapped in meanwhile. OriginError if not."""
        self._check_confined(self.root, "the source")
        real = self._check_confined(self._resolve(path), path)
        try:
            return os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            raise OriginError(f"file source {self.source.path}: {path}: {e.strerror}") from None

    async def read(self, path: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        f = os.fdopen(await asyncio.to_thread(self.open, path), "rb")
        try:
            await asyncio.to_thread(f.seek, offset)
            async for data in chunks(lambda n: asyncio.to_thread(f.read, n), length):
                yield data
        finally:
            f.close()

    async def range_reader(self, path: str) -> FileRanges:
        return FileRanges(self, path)

    def describe(self) -> dict[str, object]:
        return {"type": self.kind, "path": self.source.path}


@dataclass(frozen=True)
class FileRanges:
    """A file of a `file` source read a range at a time on threads (engine/threaded_read.py),
    so that `lock` and `publish` over several files hash on every core, each thread hashing
    the pieces it reads, instead of feeding one event loop's reads to the hashing pool."""

    origin: FileOrigin
    path: str

    def read_range(self, offset: int, length: int, size: int,
                   into: Callable[[memoryview], None], reading: Reading) -> None:
        if length <= 0:
            return
        where = f"file source {self.origin.source.path}: {self.path}"
        fd = self.origin.open(self.path)
        try:
            try:
                now = os.fstat(fd).st_size
            except OSError as e:
                raise OriginError(f"{where}: {e.strerror}") from None
            if now != size:
                raise OriginError(f"{where}: {now} bytes, listed as {size} "
                                  "(did it change while locking?)")
            view = memoryview(bytearray(min(FILE_BUFFER, length)))
            at, end = offset, offset + length
            while at < end:
                if reading.stopped.is_set():
                    raise Stopped()
                try:
                    n = os.preadv(fd, [view[:min(len(view), end - at)]], at)
                except OSError as e:
                    raise OriginError(f"{where}: {e.strerror}") from None
                if not n:
                    raise OriginError(f"{where}: ended at byte {at}, listed as {size} bytes "
                                      "(did it change while locking?)")
                into(view[:n])  # the disk's OSError as it is
                at += n
        finally:
            os.close(fd)
