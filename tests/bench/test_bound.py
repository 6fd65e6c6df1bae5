"""The benchmark's fluid lower bound and size parser (bench/bound.py): pure functions, no timing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `bench` is not an installed package

from bench.bound import fluid_lower_bound, parse_size  # noqa: E402

MIB = 1 << 20


def test_the_origin_bounds_a_small_cluster_of_fast_nodes() -> None:
    # 64 MiB from a 4 MiB/s origin: 16 s however fast the 4 nodes are.
    assert fluid_lower_bound(64 * MIB, 4 * MIB, [8 * MIB] * 4, [8 * MIB] * 4) == 16.0


def test_the_slowest_downloader_bounds_when_it_is_slower_than_the_origin() -> None:
    assert fluid_lower_bound(64 * MIB, 4 * MIB, [8 * MIB, 1 * MIB], [8 * MIB, 1 * MIB]) == 64.0


def test_total_upload_bounds_a_large_cluster() -> None:
    # 100 nodes uploading 1 MiB/s each and a 10 MiB/s origin: 100 * 10 MiB / 110 MiB/s.
    t = fluid_lower_bound(10 * MIB, 10 * MIB, [1 * MIB] * 100, [100 * MIB] * 100)
    assert t == pytest.approx(100 * 10 / 110)
    assert t > 10 * MIB / (10 * MIB)


def test_one_node_is_bounded_by_the_origin_or_its_own_link() -> None:
    assert fluid_lower_bound(8 * MIB, 2 * MIB, [1], [4 * MIB]) == 4.0
    assert fluid_lower_bound(8 * MIB, 8 * MIB, [1], [2 * MIB]) == 4.0


@pytest.mark.parametrize("args", [(1, 0, [1], [1]), (1, 1, [], []), (1, 1, [1], [1, 2]),
                                  (1, 1, [0], [1])])
def test_nonsense_rates_are_refused(args) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        fluid_lower_bound(*args)


@pytest.mark.parametrize("text,n", [("64MiB", 64 * MIB), ("128KiB", 128 << 10), ("4M", 4 * MIB),
                                    ("1.5GiB", 3 << 29), ("1000", 1000), ("8MiB/s", 8 * MIB)])
def test_sizes_parse_in_binary_units(text: str, n: int) -> None:
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["", "MiB", "4 parsecs", "-1M"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)
