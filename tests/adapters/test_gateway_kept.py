"""The gateway's end-game keep cache (`gateway_kept.Kept`): pure, no I/O."""

from reconciler.adapters.gateway_kept import Kept

K = ("ds", "ih", "f.bin")


def test_at_finds_the_chunk_covering_a_position_even_behind_later_offsets():
    kept = Kept(1 << 20)
    kept.add(K, 0, b"a" * 100, 0)
    kept.add(K, 10, b"b" * 5, 1)  # overlaps the first; starts after it
    kept.add(K, 200, b"c" * 10, 0)
    assert kept.at(K, 50) == (b"a" * 50, 0)  # behind the chunk at 10, which ends at 15
    assert kept.at(K, 12)[0] in (b"a" * 88, b"b" * 3)
    assert kept.at(K, 205) == (b"c" * 5, 0)
    assert kept.at(K, 150) == (b"", -1)
    assert kept.at(K, 210) == (b"", -1)
    assert kept.at(("ds", "ih", "other"), 0) == (b"", -1)


def test_next_start_is_the_first_offset_after_the_position():
    kept = Kept(1 << 20)
    for off in (300, 100, 200):
        kept.add(K, off, b"x" * 10, 0)
    assert kept.next_start(K, 0, 1000) == 100
    assert kept.next_start(K, 100, 1000) == 200  # after, not at
    assert kept.next_start(K, 250, 280) == 280  # nothing before stop
    assert kept.next_start(("ds", "ih", "other"), 0, 7) == 7


def test_the_oldest_chunks_go_first_and_sizes_stay_exact():
    kept = Kept(25)
    kept.add(K, 0, b"a" * 10, 0)
    kept.add(K, 10, b"b" * 10, 0)
    kept.add(K, 20, b"c" * 10, 0)  # over the limit: the oldest goes
    assert kept.size == 20 and kept.at(K, 5) == (b"", -1) and kept.at(K, 15)[0] == b"b" * 5
    kept.add(K, 10, b"z" * 10, 1)  # already there: kept as it was
    assert kept.at(K, 10) == (b"b" * 10, 0)


def test_drop_removes_every_chunk_touching_the_range_and_drop_origins_by_origin():
    kept = Kept(1 << 20)
    kept.add(K, 0, b"a" * 100, 0)  # long: reaches into the dropped range from far before
    kept.add(K, 150, b"b" * 10, 1)
    kept.add(K, 300, b"c" * 10, 1)
    kept.drop(K, 90, 151)
    assert kept.at(K, 0) == (b"", -1) and kept.at(K, 155) == (b"", -1)
    assert kept.at(K, 300) == (b"c" * 10, 1) and kept.size == 10
    kept.add(("ds", "ih", "g"), 0, b"d" * 10, 0)
    kept.drop_origins("ds", "ih", {1})
    assert kept.at(K, 300) == (b"", -1) and kept.at(("ds", "ih", "g"), 0)[1] == 0
    assert kept.size == 10
