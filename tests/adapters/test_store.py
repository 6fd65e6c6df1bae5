"""reconciler.adapters.store: versions on disk, completeness, atomic activation, eviction, draining."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from reconciler.adapters import atomic
from reconciler.adapters.store import Store

IH1 = "1" * 64
IH2 = "2" * 64
NAME = "llama"  # the torrent's name: top-level directory of the version


def _download(store: Store, dataset: str, ih: str, version: str,
              files: dict[str, bytes] | None = None) -> Path:
    """What the executor and libtorrent do: begin, write into the save path, move to the store."""
    files = files if files is not None else {"weights.bin": b"w" * 1000, "sub/config.json": b"{}"}
    save = store.begin(dataset, ih, version)
    assert save == store.staging_dir(dataset, ih)
    for rel, data in files.items():
        p = save / NAME / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    store.version_dir(dataset, ih).parent.mkdir(parents=True, exist_ok=True)
    os.rename(save, store.version_dir(dataset, ih))  # libtorrent's move_storage
    return store.version_dir(dataset, ih)


def _complete(store: Store, dataset: str, ih: str, version: str,
              files: dict[str, bytes] | None = None) -> int:
    files = files if files is not None else {"weights.bin": b"w" * 1000, "sub/config.json": b"{}"}
    _download(store, dataset, ih, version, files)
    total = sum(map(len, files.values()))
    store.mark_complete(dataset, ih, version, NAME, total)
    return total


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state")


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


# -- downloading and completeness ---------------------------------------------------------------


def test_empty_store_observes_nothing(store: Store) -> None:
    assert store.observe() == {}
    obs = store.observe_dataset("nothing")
    assert obs.versions == {} and obs.active is None and obs.link is None


def test_begin_records_a_partial_version(store: Store) -> None:
    save = store.begin("ds", IH1, "v1")
    assert save == store.staging_dir("ds", IH1) and save.is_dir()
    assert store.save_path("ds", IH1) == save
    (save / NAME).mkdir()
    (save / NAME / "part").write_bytes(b"half")
    v = store.observe()["ds"].versions[IH1]
    assert (v.version, v.complete, v.completed_at) == ("v1", False, None)
    # begin again (a resumed download) keeps the same place and label
    assert store.begin("ds", IH1, "v1") == save
    assert store.observe_dataset("ds").versions[IH1].version == "v1"


def test_complete_version_after_move_and_mark(store: Store) -> None:
    _download(store, "ds", IH1, "v1")
    # once moved, libtorrent's save path is the store
    assert store.save_path("ds", IH1) == store.version_dir("ds", IH1)
    store.mark_complete("ds", IH1, "v1", NAME, 1002)
    obs = store.observe()
    assert list(obs) == ["ds"]
    v = obs["ds"].versions[IH1]
    assert v.complete and v.version == "v1" and v.bytes_total == 1002
    assert v.info_hash == IH1 and v.completed_at is not None
    assert store.content_dir("ds", IH1) == store.version_dir("ds", IH1) / NAME
    assert (store.content_dir("ds", IH1) / "weights.bin").read_bytes() == b"w" * 1000
    # the staging area is cleaned up
    assert not (store.staging / "ds").exists()
    # begin on a complete version points libtorrent at the store (seeding after a restart)
    assert store.begin("ds", IH1, "v1") == store.version_dir("ds", IH1)
    assert store.observe_dataset("ds").versions[IH1].complete


def test_moved_but_unmarked_version_is_incomplete(store: Store) -> None:
    """A crash between libtorrent's move and the metadata write: data there, not trusted."""
    _download(store, "ds", IH1, "v1")
    v = store.observe()["ds"].versions[IH1]
    assert not v.complete and v.completed_at is None
    assert v.version == "v1"  # the label begin() recorded is not lost
    with pytest.raises(FileNotFoundError):
        store.content_dir("ds", IH1)


def test_version_dir_without_any_metadata_is_incomplete(store: Store) -> None:
    d = store.version_dir("ds", IH1) / NAME
    d.mkdir(parents=True)
    (d / "f").write_bytes(b"x")
    v = store.observe()["ds"].versions[IH1]
    assert not v.complete


def test_mark_complete_refuses_missing_data(store: Store) -> None:
    store.begin("ds", IH1, "v1")  # never moved into the store
    with pytest.raises(FileNotFoundError):
        store.mark_complete("ds", IH1, "v1", NAME, 10)
    assert not store.observe_dataset("ds").versions[IH1].complete


def test_hidden_and_stray_entries_are_ignored(store: Store) -> None:
    _complete(store, "ds", IH1, "v1")
    (store.root / ".tmp").mkdir()
    (store.root / "ds" / ".partial").mkdir()
    (store.root / "stray.json").write_text("{}")
    obs = store.observe()
    assert list(obs) == ["ds"] and list(obs["ds"].versions) == [IH1]


# -- activation -------------------------------------------------------------------------------


def test_activate_creates_symlink(store: Store, data_root: Path) -> None:
    _complete(store, "ds", IH1, "v1")
    link = data_root / "models" / "llama"
    store.activate("ds", IH1, link)
    assert link.is_symlink()
    assert Path(os.readlink(link)) == store.version_dir("ds", IH1) / NAME
    assert (link / "weights.bin").read_bytes() == b"w" * 1000
    obs = store.observe_dataset("ds")
    assert obs.active == IH1 and obs.link == str(link)


def test_activate_refuses_incomplete_version(store: Store, data_root: Path) -> None:
    _download(store, "ds", IH1, "v1")
    link = data_root / "llama"
    with pytest.raises(FileNotFoundError):
        store.activate("ds", IH1, link)
    assert not os.path.lexists(link)


def test_activate_swaps_versions_without_a_gap(store: Store, data_root: Path) -> None:
    _complete(store, "ds", IH1, "v1", {"f": b"one"})
    _complete(store, "ds", IH2, "v2", {"f": b"two"})
    link = data_root / "llama"
    store.activate("ds", IH1, link)
    assert link.exists() and (link / "f").read_bytes() == b"one"

    # a reader polling the link during many swaps never finds it missing
    stop = threading.Event()
    missing: list[int] = []
    seen: set[bytes] = set()

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.add((link / "f").read_bytes())
            except FileNotFoundError:
                missing.append(1)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(200):
            store.activate("ds", IH2 if i % 2 == 0 else IH1, link)
    finally:
        stop.set()
        t.join()
    assert missing == []
    assert seen <= {b"one", b"two"}

    store.activate("ds", IH2, link)
    assert link.exists() and link.is_symlink() and (link / "f").read_bytes() == b"two"
    obs = store.observe_dataset("ds")
    assert obs.active == IH2 and obs.link == str(link)
    assert {v.complete for v in obs.versions.values()} == {True}
    assert [p.name for p in data_root.iterdir()] == ["llama"]  # no temp links left behind


def test_activate_refuses_to_replace_user_data(store: Store, data_root: Path) -> None:
    _complete(store, "ds", IH1, "v1")
    user_dir = data_root / "llama"
    user_dir.mkdir()
    (user_dir / "mine.txt").write_text("precious")
    with pytest.raises(FileExistsError):
        store.activate("ds", IH1, user_dir)
    assert user_dir.is_dir() and not user_dir.is_symlink()
    assert (user_dir / "mine.txt").read_text() == "precious"
    user_file = data_root / "file"
    user_file.write_text("precious too")
    with pytest.raises(FileExistsError):
        store.activate("ds", IH1, user_file)
    assert user_file.read_text() == "precious too"
    obs = store.observe_dataset("ds")
    assert obs.active is None and obs.link is None


def test_moving_the_activation_removes_our_old_link(store: Store, data_root: Path) -> None:
    _complete(store, "ds", IH1, "v1")
    old, new = data_root / "old" / "llama", data_root / "new" / "llama"
    store.activate("ds", IH1, old)
    store.activate("ds", IH1, new)
    assert not os.path.lexists(old)
    assert new.is_symlink()
    obs = store.observe_dataset("ds")
    assert obs.link == str(new) and obs.active == IH1


def test_moving_the_activation_keeps_a_link_someone_repointed(store: Store, data_root: Path,
                                                               tmp_path: Path) -> None:
    _complete(store, "ds", IH1, "v1")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    old, new = data_root / "old", data_root / "new"
    store.activate("ds", IH1, old)
    atomic.symlink(elsewhere, old)  # an operator repoints it outside the store
    store.activate("ds", IH1, new)
    assert old.is_symlink() and Path(os.readlink(old)) == elsewhere
    assert new.is_symlink()


def test_repointed_link_is_not_reported_active(store: Store, data_root: Path,
                                               tmp_path: Path) -> None:
    _complete(store, "ds", IH1, "v1")
    link = data_root / "llama"
    store.activate("ds", IH1, link)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    atomic.symlink(elsewhere, link)
    obs = store.observe_dataset("ds")
    assert obs.active is None and obs.link is None


# -- eviction ---------------------------------------------------------------------------------


def test_evict_inactive_version_keeps_active(store: Store, data_root: Path) -> None:
    _complete(store, "ds", IH1, "v1", {"f": b"a" * 100})
    _complete(store, "ds", IH2, "v2", {"f": b"b" * 300})
    link = data_root / "llama"
    store.activate("ds", IH2, link)
    assert store.evict("ds", IH1) == 100
    obs = store.observe_dataset("ds")
    assert list(obs.versions) == [IH2] and obs.active == IH2
    assert (link / "f").read_bytes() == b"b" * 300
    assert not store.version_dir("ds", IH1).exists()
    assert not (store.root / "ds" / f"{IH1}.json").exists()


def test_evict_active_version_removes_link_data_and_dataset_dir(store: Store,
                                                                data_root: Path) -> None:
    total = _complete(store, "ds", IH1, "v1")
    link = data_root / "llama"
    store.activate("ds", IH1, link)
    store.mark_draining("ds")
    freed = store.evict("ds", IH1)
    assert freed == total
    assert not os.path.lexists(link)
    assert not (store.root / "ds").exists()
    assert "ds" not in store.observe()
    assert list(data_root.iterdir()) == []


def test_evict_keeps_a_link_that_is_not_ours(store: Store, data_root: Path,
                                             tmp_path: Path) -> None:
    _complete(store, "ds", IH1, "v1")
    link = data_root / "llama"
    store.activate("ds", IH1, link)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    atomic.symlink(elsewhere, link)
    store.evict("ds", IH1)
    assert link.is_symlink() and Path(os.readlink(link)) == elsewhere


def test_evict_partial_and_unmarked_versions(store: Store) -> None:
    save = store.begin("ds", IH1, "v1")
    (save / NAME).mkdir()
    (save / NAME / "part").write_bytes(b"p" * 50)
    assert store.evict("ds", IH1) == 50
    assert not (store.staging / "ds").exists()
    _download(store, "ds", IH2, "v2", {"f": b"q" * 70})  # moved, never marked
    assert store.evict("ds", IH2) == 70
    assert store.observe() == {}
    assert not (store.staging / "ds").exists() and not (store.root / "ds").exists()


def test_evict_counts_only_bytes_actually_freed(store: Store) -> None:
    """A file hard-linked into another version (dedup) stays allocated: not counted as freed."""
    _complete(store, "ds", IH1, "v1", {"shared": b"s" * 500, "own": b"o" * 20})
    _complete(store, "ds", IH2, "v2", {"own": b"p" * 30})
    os.link(store.content_dir("ds", IH1) / "shared", store.content_dir("ds", IH2) / "shared")
    assert store.evict("ds", IH1) == 20
    assert (store.content_dir("ds", IH2) / "shared").read_bytes() == b"s" * 500
    assert store.evict("ds", IH2) == 530


def test_evict_unknown_version_frees_nothing(store: Store) -> None:
    _complete(store, "ds", IH1, "v1")
    assert store.evict("ds", IH2) == 0
    assert store.evict("other", IH2) == 0
    assert list(store.observe_dataset("ds").versions) == [IH1]


# -- draining ---------------------------------------------------------------------------------


def test_draining_marks(store: Store) -> None:
    _complete(store, "ds", IH1, "v1")
    assert not (store.root / "ds" / "draining.json").exists()  # not draining: since "now"
    store.mark_draining("ds")
    first = store.draining_since("ds")
    assert (store.root / "ds" / "draining.json").exists()
    store.mark_draining("ds")  # idempotent: the grace period does not restart
    assert store.draining_since("ds") == first
    store.clear_draining("ds")
    assert not (store.root / "ds" / "draining.json").exists()
    store.clear_draining("ds")  # clearing twice is fine
    store.clear_draining("never-existed")
    store.mark_draining("ds")  # a new grace period starts
    assert (store.root / "ds" / "draining.json").exists()
    # draining does not change what is observed
    assert list(store.observe_dataset("ds").versions) == [IH1]


def test_mark_draining_keeps_the_first_timestamp(store: Store) -> None:
    _complete(store, "ds", IH1, "v1")
    atomic.write_json(store.root / "ds" / "draining.json", {"since": 1000.0})  # long ago
    store.mark_draining("ds")
    assert store.draining_since("ds") == 1000.0
    store.clear_draining("ds")
    store.mark_draining("ds")
    assert store.draining_since("ds") != 1000.0
