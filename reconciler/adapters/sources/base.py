"""The interface every origin implements."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, AsyncIterator, Awaitable, Callable, Mapping
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from reconciler.adapters.sources.threaded import RangeReader

CHUNK = 1 << 20


def safe_url(url: str) -> str:
    """A URL without userinfo or query string (either may carry a credential), for messages
    and lock metadata."""
    u = urlsplit(url)
    host = u.hostname or ""
    if u.port:
        host += f":{u.port}"
    return f"{u.scheme}://{host}{u.path}"


def range_header(offset: int, length: int | None) -> str | None:
    """The HTTP `Range` value for `length` bytes from `offset` (to the end if None); None when
    the whole object is wanted."""
    if not offset and length is None:
        return None
    return f"bytes={offset}-{'' if length is None else offset + length - 1}"


async def chunks(read: Callable[[int], Awaitable[bytes]], length: int | None,
                 size: int = CHUNK) -> AsyncIterator[bytes]:
    """`read(n)` called for at most `size` bytes at a time until `length` bytes (all, if None)
    have come, or it returns nothing."""
    left = length
    while left is None or left > 0:
        data = await read(size if left is None else min(size, left))
        if not data:
            return
        if left is not None:
            left -= len(data)
        yield data


class OriginError(Exception):
    """An origin could not list or serve what was asked; the message is safe to show."""


@dataclass(frozen=True)
class OriginFile:
    path: str  # posix, relative to the dataset's top directory
    size: int
    revision: Mapping[str, object] = field(default_factory=dict)  # ETag, mtime...: no secrets


class Origin(abc.ABC):
    kind: str

    @abc.abstractmethod
    async def list_files(self) -> list[OriginFile]:
        """Every file of the dataset with its size and revision, sorted by path."""

    @abc.abstractmethod
    def read(self, path: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Stream `length` bytes of `path` from `offset` (to the end if None)."""

    def describe(self) -> Mapping[str, object]:
        """What the lock records about this origin: never credentials or header values."""
        return {"type": self.kind}

    async def range_reader(self, path: str) -> RangeReader | None:
        """`path` read a range at a time on threads of their own (engine/threaded_read.py), or
        None where every read goes through `read`."""
        return None
