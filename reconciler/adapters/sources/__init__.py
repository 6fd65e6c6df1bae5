"""Origins of dataset bytes, behind one small interface (`Origin`).

Everything that talks to an origin (the `lock` command, the web-seed gateway) goes through
`open_origin`, so a new source type is one module here and one line in `_FACTORIES`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import aiohttp

from reconciler.model.desired import FileSource, HttpSource, S3Source, Source
from reconciler.adapters.sources.base import Origin, OriginError, OriginFile
from reconciler.adapters.sources.file import FileOrigin
from reconciler.adapters.sources.http import HttpOrigin
from reconciler.adapters.sources.hf import HfSource, open_hf  # imports huggingface_hub lazily
from reconciler.adapters.sources.s3 import DEFAULT_CONNECTIONS, S3Origin

__all__ = ["Origin", "OriginError", "OriginFile", "open_origin"]

# Every factory takes (source, ctx, pinned): `pinned` is what the lock recorded about the
# origin it was read from (`describe()` at lock time), so reads can stay on that revision.
_FACTORIES: dict[type, Callable[..., Origin]] = {
    HttpSource: lambda src, ctx, pinned=None: HttpOrigin(src, ctx.http),
    FileSource: lambda src, ctx, pinned=None: FileOrigin(src, ctx.state_root, ctx.publish_roots),
    HfSource: open_hf,  # the lock's commit pins every read
    S3Source: lambda src, ctx, pinned=None: S3Origin(src, ctx.connections),
}


class OriginContext:
    """Shared resources for origins: one HTTP client session, the state repo root, on a node
    the directories `file` sources may read (`publish_roots`; None: unconfined), and how many
    requests may be open to origins at once (`connections`, the node's originConnections:
    the HTTP session's and every S3 client's pool hold that many)."""

    def __init__(self, state_root: Path, publish_roots: Sequence[Path] | None = None,
                 connections: int = DEFAULT_CONNECTIONS) -> None:
        self.state_root = state_root
        self.publish_roots = None if publish_roots is None else tuple(publish_roots)
        self.connections = max(1, connections)
        self._http: aiohttp.ClientSession | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=max(100, self.connections)),
                timeout=aiohttp.ClientTimeout(total=None, connect=30, sock_read=120),
                auto_decompress=False)
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def __aenter__(self) -> "OriginContext":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def open_origin(source: Source, ctx: OriginContext,
                pinned: Mapping[str, object] | None = None) -> Origin:
    factory = _FACTORIES.get(type(source))
    if factory is None:
        raise OriginError(f"{source.type} sources are not supported yet")
    return factory(source, ctx, pinned=pinned)
