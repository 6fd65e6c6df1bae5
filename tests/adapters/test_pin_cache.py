"""The pin cache: torrents of unlocked datasets kept under <stateDir>/metadata/."""

from __future__ import annotations

import dataclasses

import pytest

from factories import dataset, node, state, torrent
from reconciler.adapters.pin_cache import PinCache
from reconciler.core.pinning import metadata_key, with_locks


def test_cache_roundtrip_and_with_locks(tmp_path):
    d = dataset("x", locked=False)
    s = state([node("n1")], [d, dataset("y")])
    cache = PinCache(tmp_path)
    assert cache.locks(s) == {}
    lock = cache.put(d, torrent("x"))
    assert cache.get("x", metadata_key(d)) == torrent("x")
    assert cache.locks(s) == {"x": lock}
    resolved = with_locks(s, cache.locks(s))
    assert resolved.datasets["x"].lock == lock
    assert resolved.datasets["y"] is s.datasets["y"]  # a locked dataset keeps its own lock
    assert with_locks(s, {}) is s


def test_cache_refuses_a_torrent_of_another_dataset_and_odd_names(tmp_path):
    cache = PinCache(tmp_path)
    with pytest.raises(ValueError, match="not of dataset 'x'"):
        cache.put(dataset("x", locked=False), torrent("other"))
    with pytest.raises(ValueError):
        cache.put(dataset("x", locked=False), b"not a torrent")
    assert cache.get("../../etc", "0" * 32) is None
    assert cache.get("x", "../x") is None


def test_prune_keeps_the_current_and_a_few_earlier_keys(tmp_path):
    cache = PinCache(tmp_path)
    d = dataset("x", locked=False)
    for i in range(7):
        cache.put(dataclasses.replace(d, version=f"v{i}"), torrent("x"))
    cache.put(dataset("gone", locked=False), torrent("gone"))
    current = dataclasses.replace(d, version="v0")
    cache.prune(state([node("n1")], [current]))
    left = {p.stem for p in (tmp_path / "metadata" / "x").iterdir()}
    assert metadata_key(current) in left and len(left) == 5
    assert not (tmp_path / "metadata" / "gone").exists()
