"""core.placement.Ranking: read partly or whole, before or after `compact()`, it is exactly
`rank_nodes`' order (only the first few nodes are selected without a full sort)."""

from __future__ import annotations

import itertools

import pytest

from reconciler.core.placement import _TOP, Ranking, rank_nodes


@pytest.mark.parametrize("n", [0, 1, _TOP - 1, _TOP, _TOP + 1, 50, 1000])
@pytest.mark.parametrize("compact_after", [None, 0, 3, _TOP, _TOP + 2])
def test_ranking_reads_like_rank_nodes(n: int, compact_after: int | None) -> None:
    names = tuple(f"gpu-{i:05d}" for i in range(n))
    want = rank_nodes("ds-000042", names)
    r = Ranking("ds-000042", names, [x.encode() for x in names])
    assert len(r) == n
    if compact_after is not None:
        assert list(itertools.islice(r, compact_after)) == want[:compact_after]
        r.compact()
    assert list(r) == want
    assert list(r) == want  # again, from what it kept
    if n:
        assert r[0] == want[0] and r[-1] == want[-1] and r[1:3] == want[1:3]
