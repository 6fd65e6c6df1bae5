"""The benchmark's dataset: `count` files of pseudo-random bytes adding up to exactly `size`,
and the next version of it for a rollout; or `--datasets K` such datasets, each with its own
content under the origin's `<dataset>/<version>/`.

Sizes are deliberately not multiples of 1 MiB (real weight shards are not, and piece/file
boundaries must not line up by luck). Content is seeded, so two runs with the same parameters
serve byte-identical data. The rollout version replaces whole files (the way a model update
replaces shards) and hard-links the rest, so the origin serves unchanged files byte-for-byte and
the benchmark knows exactly how many bytes changed.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Version:
    """One version of the dataset on the origin: `root/<name>` for every file."""

    name: str  # "v1", "v2": also the dataset's spec.version
    root: Path
    sizes: dict[str, int]
    changed: tuple[str, ...] = ()  # files whose content differs from the previous version
    dataset: str = "weights"  # the Dataset's metadata.name
    url_path: str = ""  # under the origin's root ("" = name: the single dataset's layout)

    @property
    def prefix(self) -> str:
        """The origin's URL path of this version's files, without slashes around it."""
        return self.url_path or self.name

    @property
    def size(self) -> int:
        return sum(self.sizes.values())

    @property
    def changed_bytes(self) -> int:
        return sum(self.sizes[f] for f in self.changed)


def file_sizes(size: int, count: int) -> dict[str, int]:
    """`count` file names and sizes summing to `size`: nearly equal, none a multiple of 1 MiB."""
    if count < 1 or size < count * 4096:
        raise ValueError(f"{size} bytes cannot make {count} files of at least 4 KiB")
    width = len(str(count))
    base, sizes = size // count, {}
    for i in range(count - 1):
        jitter = ((i * 7919) % 97 - 48) * 1021  # a few KiB either way, deterministic
        sizes[f"model-{i + 1:0{width}}-of-{count}.safetensors"] = base + jitter
    sizes[f"model-{count:0{width}}-of-{count}.safetensors"] = size - sum(sizes.values())
    return sizes


def _content(name: str, n: int, seed: str) -> bytes:
    return random.Random(f"{seed}/{name}").randbytes(n)


def write_version(root: Path, name: str, size: int, count: int) -> Version:
    """The first version under root/name/."""
    sizes = file_sizes(size, count)
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    for f, n in sizes.items():
        (d / f).write_bytes(_content(f, n, name))
    return Version(name, d, sizes)


def write_datasets(root: Path, name: str, size: int, count: int, datasets: int
                   ) -> list[Version]:
    """`datasets` datasets of `size` bytes in `count` files each. One dataset keeps
    write_version's layout (root/name/, named "weights"); several are "d01".."dK" under
    root/<dataset>/name/, each with its own content (identical files would be one torrent to
    the store, not K datasets) and sizes shifted by a few KiB so no two torrents line up."""
    if datasets == 1:
        return [write_version(root, name, size, count)]
    width = len(str(datasets))
    out = []
    for k in range(datasets):
        ds = f"d{k + 1:0{width}}"
        own = size - k * 1021
        sizes = file_sizes(own, count)
        d = root / ds / name
        d.mkdir(parents=True, exist_ok=True)
        for f, n in sizes.items():
            (d / f).write_bytes(_content(f, n, f"{ds}/{name}"))
        out.append(Version(name, d, sizes, dataset=ds, url_path=f"{ds}/{name}"))
    return out


def write_rollout(prev: Version, name: str, fraction: float) -> Version:
    """The next version under prev.root.parent/name/: the first ceil(fraction x files) files get
    new content (same sizes), the others are hard links to the previous version's."""
    d = prev.root.parent / name
    d.mkdir(parents=True, exist_ok=True)
    files = sorted(prev.sizes)
    changed = tuple(files[:max(1, math.ceil(fraction * len(files)))])
    for f in files:
        if f in changed:
            (d / f).write_bytes(_content(f, prev.sizes[f], name))
        elif not (d / f).exists():
            os.link(prev.root / f, d / f)
    return Version(name, d, dict(prev.sizes), changed)


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (a top-level symlink followed), by relative path."""
    root = root.resolve()
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h = hashlib.sha256()
            with open(p, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            out[p.relative_to(root).as_posix()] = h.hexdigest()
    return out
