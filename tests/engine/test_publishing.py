"""`engine.publishing`: the publisher's snapshot, on real files. The refusals read nothing;
the snapshot is a copy, so writes to the source after it change nothing published."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.adapters.published import PublishedVersions
from reconciler.adapters.sources import OriginContext
from reconciler.core.pinning import check
from reconciler.core.publish import Published
from reconciler.engine.publishing import PublishRefused, check_immutable, snapshot
from reconciler.model.desired import Dataset, NodeSource, Placement


def ckpt(path: Path) -> Dataset:
    return Dataset("ckpt", "s1", NodeSource("gpu-01", str(path)), Placement(all=True), "ckpt")


@pytest.fixture
def train(tmp_path: Path) -> Path:
    src = tmp_path / "train" / "step-1"
    src.mkdir(parents=True)
    (src / "model.bin").write_bytes(os.urandom(300_000))
    (src / "sub").mkdir()
    (src / "sub" / "cfg.json").write_bytes(b"{}\n")
    return src


async def test_the_snapshot_is_a_copy_that_later_writes_do_not_reach(tmp_path: Path,
                                                                     train: Path) -> None:
    out = tmp_path / "staging" / "ckpt"
    async with OriginContext(tmp_path, [tmp_path / "train"]) as ctx:
        torrent = await snapshot("gpu-01", ckpt(train), ctx, lambda d, t: None, out)
    original = (train / "model.bin").read_bytes()
    assert (out / "model.bin").read_bytes() == original
    assert (out / "sub" / "cfg.json").read_bytes() == b"{}\n"
    assert os.stat(out / "model.bin").st_ino != os.stat(train / "model.bin").st_ino
    with open(train / "model.bin", "r+b") as f:  # the training job writes in place
        f.write(b"\0" * 1000)
    assert (out / "model.bin").read_bytes() == original
    lock = check(torrent, ckpt(train), "t")
    assert sorted(lock.files) == [("model.bin", 300_000), ("sub/cfg.json", 3)]


async def test_a_path_outside_publish_roots_is_refused_before_a_byte_is_read(
        tmp_path: Path, train: Path) -> None:
    out = tmp_path / "staging" / "ckpt"
    async with OriginContext(tmp_path, [tmp_path / "elsewhere"]) as ctx:
        with pytest.raises(PublishRefused) as e:
            await snapshot("gpu-01", ckpt(train), ctx, lambda d, t: None, out)
    assert str(e.value) == (f"node gpu-01 refuses to publish {train}: outside its publishRoots "
                            f"({tmp_path / 'elsewhere'})")
    assert not e.value.final and not out.exists()


async def test_a_symlink_inside_that_leads_out_is_refused(tmp_path: Path, train: Path) -> None:
    (tmp_path / "secret.pem").write_bytes(b"key\n")
    (train / "sub" / "key.pem").symlink_to(tmp_path / "secret.pem")
    out = tmp_path / "staging" / "ckpt"
    async with OriginContext(tmp_path, [tmp_path / "train"]) as ctx:
        with pytest.raises(PublishRefused) as e:
            await snapshot("gpu-01", ckpt(train), ctx, lambda d, t: None, out)
    assert str(e.value).startswith(f"node gpu-01 cannot publish {train}: ")
    assert "outside this node's publishRoots" in str(e.value)
    assert not (out / "sub" / "key.pem").exists()


async def test_the_same_version_with_other_bytes_is_refused_for_good(tmp_path: Path,
                                                                     train: Path) -> None:
    record = PublishedVersions(tmp_path / "state")
    async with OriginContext(tmp_path, [tmp_path / "train"]) as ctx:
        first = await snapshot("gpu-01", ckpt(train), ctx, lambda d, t: None, tmp_path / "a")
        check_immutable("gpu-01", ckpt(train), first, record)  # nothing published yet
        ih = check(first, ckpt(train), "t").info_hash
        record.record("ckpt", Published("s1", ih, str(train)))
        check_immutable("gpu-01", ckpt(train), first, record)  # the same bytes again: fine
        (train / "model.bin").write_bytes(b"changed")
        second = await snapshot("gpu-01", ckpt(train), ctx, lambda d, t: None, tmp_path / "b")
    with pytest.raises(PublishRefused) as e:
        check_immutable("gpu-01", ckpt(train), second, record)
    assert e.value.final and "already published by node gpu-01" in str(e.value)
