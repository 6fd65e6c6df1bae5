import pytest

from reconciler.core.ranges import MAX_PART, MIN_PART, split_range


def test_empty_range_has_no_parts() -> None:
    assert split_range(10, 0, 8) == []


def test_small_range_is_one_part() -> None:
    assert split_range(100, MIN_PART, 16) == [(100, MIN_PART)]


def test_parts_cover_the_range_in_order_without_overlap() -> None:
    parts = split_range(7, 10_000_001, 16)
    assert parts[0][0] == 7
    for (a, n), (b, _) in zip(parts, parts[1:]):
        assert a + n == b
    assert sum(n for _, n in parts) == 10_000_001
    assert len(parts) == 16


@pytest.mark.parametrize("length", [1, MIN_PART + 1, 3 * MAX_PART + 5, 100 * MAX_PART])
def test_part_sizes_are_clamped(length: int) -> None:
    parts = split_range(0, length, 16)
    assert all(n <= MAX_PART for _, n in parts)
    assert all(n >= MIN_PART for _, n in parts[:-1])


def test_one_stream_means_parts_of_at_most_max_part() -> None:
    assert split_range(0, 2 * MAX_PART, 1) == [(0, MAX_PART), (MAX_PART, MAX_PART)]


def test_a_part_in_flight_is_finished_on_close_only_if_asked_for_and_nearly_done():
    from reconciler.core.ranges import FINISH_LEFT, finish_on_close
    assert finish_on_close(True, MIN_PART, 0)  # a whole short part asked for
    assert finish_on_close(True, 4 << 20, (4 << 20) - FINISH_LEFT)  # a long one near its end
    assert not finish_on_close(True, 4 << 20, 0)  # a long rest: cancelled
    assert not finish_on_close(False, MIN_PART, 0)  # never asked for: nothing sent yet
