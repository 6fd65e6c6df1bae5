"""Syncbit: datasets declared in git, moved by BitTorrent, verified to the byte."""

__version__ = "0.1.0"
