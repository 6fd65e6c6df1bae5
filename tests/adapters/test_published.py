"""`<stateDir>/published/`: what a node published survives a restart; a damaged record reads
as empty rather than failing the pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.adapters.published import PublishedVersions
from reconciler.core.publish import Published


def test_records_survive_a_new_instance(tmp_path: Path) -> None:
    PublishedVersions(tmp_path).record("ckpt", Published("s1", "a" * 64, "/d/s1"))
    PublishedVersions(tmp_path).record("ckpt", Published("s2", "b" * 64, "/d/s2"))
    assert PublishedVersions(tmp_path).get("ckpt") == {
        "s1": Published("s1", "a" * 64, "/d/s1"), "s2": Published("s2", "b" * 64, "/d/s2")}
    assert PublishedVersions(tmp_path).get("other") == {}


def test_a_damaged_record_reads_as_empty(tmp_path: Path) -> None:
    (tmp_path / "published").mkdir()
    (tmp_path / "published" / "ckpt.json").write_text("[1, 2")
    assert PublishedVersions(tmp_path).get("ckpt") == {}


def test_names_cannot_climb_out(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        PublishedVersions(tmp_path).record("../x", Published("s1", "a" * 64, "/d"))
