"""Names that would otherwise be bare strings, so a signature says which string it wants."""

from __future__ import annotations

from typing import NewType

InfoHash = NewType("InfoHash", str)  # a torrent's BitTorrent v2 info-hash, hex
DatasetName = NewType("DatasetName", str)  # a Dataset's metadata.name
NodeName = NewType("NodeName", str)  # a Node's metadata.name
