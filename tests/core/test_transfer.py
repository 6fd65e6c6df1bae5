"""The executor's rules (core/transfer.py) as pure functions: no process, socket or disk."""

from __future__ import annotations

from dataclasses import replace

import pytest

from factories import dataset, node, state
from reconciler.core import offload, transfer as tr
from reconciler.core.origin_pool import piece_range
from reconciler.core.plan import make_plan
from reconciler.core.transfer import (Job, Seen, Stage, decide_pass, share_origin, step_job)
from reconciler.model.desired import Placement
from reconciler.model.ids import DatasetName, InfoHash, NodeName
from reconciler.model.observed import ObservedDataset, ObservedVersion

IH = InfoHash("a" * 64)
OLD = InfoHash("b" * 64)
ME, N2, N3 = NodeName("n1"), NodeName("n2"), NodeName("n3")
PIECES = 8


def seen(**kw: object) -> Seen:
    """A download of 8 pieces of 16 KiB, this node and two target peers at .2 and .3."""
    base = dict(me=ME, targets=(ME, N2, N3), peer_ip={N2: "127.0.0.2", N3: "127.0.0.3"},
                absent=frozenset(), bytes_done=0, bytes_total=PIECES * 16384, complete=False,
                checked=True, have=(False,) * PIECES, available=(0,) * PIECES,
                connected=frozenset({"127.0.0.2", "127.0.0.3"}), piece_size=16384,
                files=(("f.bin", PIECES * 16384),))
    base.update(kw)
    return Seen(**base)  # type: ignore[arg-type]


def job(**kw: object) -> Job:
    return replace(Job.new(IH, DatasetName("x"), now=0.0), **kw)  # type: ignore[arg-type]


def kinds(effects: list[tr.Effect]) -> list[str]:
    return [type(e).__name__ for e in effects]


# -- one download -----------------------------------------------------------------------------


def test_a_complete_download_turns_the_web_seed_off_and_is_verified():
    j, eff = step_job(job(), seen(complete=True, bytes_done=PIECES * 16384), now=1.0)
    assert j.stage is Stage.VERIFYING and j.verify_rounds == 1
    assert eff == [tr.WebSeed(IH, False), tr.StartVerify(IH)]


def test_verification_reads_back_only_the_files_libtorrent_did_not_hash():
    """Pieces loaded from trusted resume data were not hashed in this process: the files
    holding them are read back; the pieces libtorrent hashed itself (downloaded, or found
    by its check) are not read a second time."""
    files = (("a.bin", 3 * 16384), ("empty", 0), ("b.bin", 100), ("c.bin", 16384 + 1))
    s = seen(complete=True, files=files, trusted_pieces=(0, 3))
    j, eff = step_job(job(), s, now=1.0)
    assert j.stage is Stage.VERIFYING
    assert eff == [tr.WebSeed(IH, False), tr.StartVerify(IH, read=("a.bin", "b.bin"))]
    assert tr.unhashed_files(replace(s, trusted_pieces=(5, 4, 4))) == ("c.bin",)
    assert tr.unhashed_files(replace(s, trusted_pieces=(99,))) == ()  # past the end
    assert tr.unhashed_files(replace(s, trusted_pieces=(2, 1))) == ("a.bin",)
    # the same as asking origin_pool.piece_range piece by piece, for any set of pieces
    many = tuple((f"f{i}", (i % 5) * 10000) for i in range(40))
    s2 = replace(s, files=many)
    for pieces in [(0,), (3, 4, 5), tuple(range(0, 60, 7)), tuple(range(60))]:
        want = {piece_range(many, 16384, p)[0] for p in pieces  # type: ignore[index]
                if piece_range(many, 16384, p) is not None}
        got = tr.unhashed_files(replace(s2, trusted_pieces=pieces))
        assert got == tuple(f for f, _ in many if f in want), pieces
    _, eff = step_job(job(), replace(s, trusted_pieces=()), now=1.0)
    assert eff[-1] == tr.StartVerify(IH, read=())  # every piece hashed by libtorrent


def test_verification_runs_until_its_result_then_moves_and_completes():
    j = job(stage=Stage.VERIFYING, verify_rounds=1)
    assert step_job(j, seen(), 1.0) == (replace(j, last_done=0, last_change=1.0), [])
    j, eff = step_job(j, seen(verify_result=()), 2.0)
    assert j.stage is Stage.MOVING and eff == [tr.Move(IH)]
    j, eff = step_job(j, seen(), 3.0)
    assert j.stage is Stage.MOVING and eff == []  # the move is still under way
    j, eff = step_job(j, seen(moved=True), 4.0)
    assert j.stage is Stage.DONE and eff == [tr.Complete(IH)]
    assert step_job(j, seen(moved=True), 5.0) == (j, [])


def test_a_verification_failure_rechecks_and_the_third_one_fails():
    j = job(stage=Stage.VERIFYING, verify_rounds=1)
    j, eff = step_job(j, seen(verify_result=("f.bin",)), 1.0)
    assert j.stage is Stage.FETCHING and kinds(eff) == ["Note", "Recheck"]
    for round_ in (2, 3):
        j, eff = step_job(j, seen(complete=True), 2.0)
        assert j.stage is Stage.VERIFYING and j.verify_rounds == round_
        j, eff = step_job(j, seen(verify_result=("f.bin",)), 3.0)
    assert j.stage is Stage.FAILED
    assert j.failure == tr.Failure(tr.FailureReason.VERIFICATION_FAILED,
                                   "verification failed 3 times: f.bin")
    assert eff[0] == tr.WebSeed(IH, False)
    assert step_job(j, seen(complete=True), 4.0) == (j, [])  # failed stays failed


def test_no_progress_while_the_origin_errs_is_a_stall():
    j = job(last_done=100, last_change=0.0)
    s = seen(bytes_done=100, origin_error="HTTP 503 from origin")
    j1, _ = step_job(j, s, tr.STALL_AFTER)
    assert j1.stage is Stage.FETCHING and j1.error == "HTTP 503 from origin"
    j2, eff = step_job(j, s, tr.STALL_AFTER + 1)
    assert j2.stage is Stage.FAILED and j2.failure is not None
    assert j2.failure.reason is tr.FailureReason.STALLED
    assert "no progress for 120s; HTTP 503" in j2.failure.message
    assert tr.WebSeed(IH, False) in eff
    # progress resets the clock: no stall
    j3, _ = step_job(j, replace(s, bytes_done=200), tr.STALL_AFTER + 1)
    assert j3.stage is Stage.FETCHING and j3.last_change == tr.STALL_AFTER + 1


def test_no_progress_without_origin_errors_is_not_a_stall():
    j, _ = step_job(job(last_done=0), seen(), 10 * tr.STALL_AFTER)
    assert j.stage is Stage.FETCHING


def test_torrent_errors_are_typed():
    j, _ = step_job(job(), seen(torrent_error="moving to the store failed: No space left on device"), 1)
    assert j.failure is not None and j.failure.reason is tr.FailureReason.NO_ROOM
    j, _ = step_job(job(), seen(torrent_error="file_open: permission denied"), 1)
    assert j.failure is not None and j.failure.reason is tr.FailureReason.TORRENT_ERROR


def test_failed_pieces_blame_the_bytes_of_that_piece():
    _, eff = step_job(job(), seen(failed_pieces=(2, 2)), 1.0)
    assert eff[0] == tr.MarkOriginBad(IH, "f.bin", 2 * 16384, 3 * 16384 - 1, 2)
    assert kinds(eff).count("MarkOriginBad") == 1


def test_stranded_pieces_make_libtorrent_hash_the_version_again_after_a_quiet_spell():
    quiet = tr.STRANDED_AFTER
    assert not tr.look_for_stranded(job(), quiet - 0.1)  # verified progress lately
    j, eff = step_job(job(last_done=0), seen(stranded=(5, 3)), quiet)
    assert tr.Recheck(IH) in eff
    assert j.rechecked_at == quiet
    note = next(e for e in eff if isinstance(e, tr.Note) and e.level == "warning")
    assert dict(note.fields) == {"pieces": 2, "first": [3, 5]}
    # one recheck per STRANDED_AFTER: the shell does not even look in between
    assert not tr.look_for_stranded(j, quiet + 1.0)
    j2, eff = step_job(j, seen(stranded=(5,)), quiet + 1.0)
    assert "Recheck" not in kinds(eff) and j2.rechecked_at == quiet
    assert tr.look_for_stranded(j, 2 * quiet)
    _, eff = step_job(j, seen(stranded=(5,)), 2 * quiet)
    assert tr.Recheck(IH) in eff


def test_no_recheck_while_pieces_are_verified_or_outside_fetching():
    _, eff = step_job(job(last_done=0), seen(stranded=(1,), bytes_done=16384),
                      tr.STRANDED_AFTER + 1)
    assert "Recheck" not in kinds(eff)  # bytes_done moved this tick: progress
    assert not tr.look_for_stranded(job(stage=Stage.VERIFYING), 100.0)
    _, eff = step_job(job(last_done=0), seen(), 100.0)  # nothing stranded
    assert "Recheck" not in kinds(eff)


T0 = 1.0  # any moment after the hash check: nothing waits for peers any more


def test_the_web_seed_is_off_before_priorities_rise_and_on_after_they_drop():
    j, eff = share_origin(job(checked_at=0.0), seen(), now=T0)
    sets = [e for e in eff if isinstance(e, (tr.WebSeed, tr.SetPriorities))]
    assert isinstance(sets[0], tr.SetPriorities) and sets[1].on
    assert 0 in sets[0].priorities  # others' pieces wait while the web seed is on
    # ... and the gateway is told the share: exactly the pieces at an origin priority (the
    # bands from OWN down, all above FROM_PEERS)
    assert sets[1].pieces == {p for p, v in enumerate(sets[0].priorities) if v > offload.FROM_PEERS}
    # every missing piece is now at a peer: priorities rise, so the web seed goes off first
    _, eff = share_origin(j, seen(available=(1,) * PIECES), now=T0 + 0.1)
    sets = [e for e in eff if isinstance(e, (tr.WebSeed, tr.SetPriorities))]
    assert sets[0] == tr.WebSeed(IH, False)
    assert isinstance(sets[1], tr.SetPriorities) and set(sets[1].priorities) == {4}


def test_nothing_is_shared_out_before_the_hash_check():
    assert share_origin(job(), seen(checked=False), 5.0) == (job(), [])


def test_the_neighbours_are_given_a_moment_to_connect_before_the_first_origin_request():
    alone = seen(connected=frozenset())
    j, eff = share_origin(job(), alone, now=0.0)
    assert eff == [] and j.checked_at == 0.0
    j, eff = share_origin(j, alone, now=tr.CONNECT_WAIT - 0.1)
    assert eff == []
    # all connected, or the missing ones dead: no wait
    assert "WebSeed" in kinds(share_origin(job(), seen(), now=0.0)[1])
    gone = seen(connected=frozenset({"127.0.0.2"}), absent=frozenset({N3}))
    assert "WebSeed" in kinds(share_origin(job(), gone, now=0.0)[1])


def test_owners_come_from_the_targets_not_from_who_is_connected():
    alone = seen(connected=frozenset())
    j, eff = share_origin(job(checked_at=0.0), alone, now=tr.CONNECT_WAIT)
    assert j.owners_for == () and "WebSeed" in kinds(eff)  # nobody came: the share all the same
    full, _ = share_origin(job(), seen(), now=0.0)
    assert j.owner_of == full.owner_of
    assert set(j.owner_of) == {ME, N2, N3}
    # a peer that drops its connection keeps its runs: only a death signal moves them
    j2, eff = share_origin(full, seen(connected=frozenset({"127.0.0.2"})), now=5.0)
    assert j2.owner_of == full.owner_of and "Note" not in kinds(eff)


def test_a_dead_peer_loses_its_runs_to_each_runs_next_node():
    j, _ = share_origin(job(), seen(), now=0.0)
    j2, eff = share_origin(j, seen(absent=frozenset({N3})), now=1.0)
    assert j2.owners_for == (N3,) and N3 not in j2.owner_of
    assert kinds(eff)[0] == "Note"  # "origin shares" is logged when they change
    for before, after in zip(j.owner_of, j2.owner_of):
        assert after == before or before == N3
    # and back once it answers again
    j3, _ = share_origin(j2, seen(), now=2.0)
    assert j3.owner_of == j.owner_of


def test_liveness_needs_failures_for_the_whole_window():
    assert not tr.peer_dead(None, 100.0)
    assert not tr.peer_dead(10.0, 10.0 + tr.PEER_DEAD_AFTER - 0.1)
    assert tr.peer_dead(10.0, 10.0 + tr.PEER_DEAD_AFTER)
    # a refusal (nothing listens) is a stronger signal than a timeout: a shorter window
    assert tr.PEER_REFUSED_FOR < tr.PEER_DEAD_AFTER
    assert not tr.peer_dead(10.0, 10.0 + tr.PEER_REFUSED_FOR - 0.1, refused=True)
    assert tr.peer_dead(10.0, 10.0 + tr.PEER_REFUSED_FOR, refused=True)


def test_every_node_computes_the_same_disjoint_shares_whatever_it_is_connected_to():
    targets = (ME, N2, N3)
    shares = []
    for i, me in enumerate(targets):
        conn = frozenset(["127.0.0.2"]) if i == 0 else frozenset()  # all different views
        s = seen(me=me, targets=targets, connected=conn)
        j, eff = share_origin(job(checked_at=0.0), s, now=tr.CONNECT_WAIT)
        prio = [e for e in eff if isinstance(e, tr.SetPriorities)][0].priorities
        share = {p for p, o in enumerate(j.owner_of) if o == me}
        fetching = {p for p, x in enumerate(prio) if x > offload.FROM_PEERS}
        assert fetching and fetching <= share  # the first band of it (a window) for now
        shares.append(share)
    assert sorted(p for sh in shares for p in sh) == list(range(PIECES))


def test_stuck_pieces_come_from_the_origin_whoever_owns_them():
    j, _ = share_origin(job(checked_at=0.0), seen(), now=T0)
    theirs = [p for p, o in enumerate(j.owner_of) if o != ME]
    assert theirs  # with three owners, some runs belong to the others
    before = [e for e in share_origin(j, seen(), T0 + 1)[1]
              if isinstance(e, tr.SetPriorities)][0]
    assert all(before.priorities[p] == 0 for p in theirs)
    later = tr.STUCK_AFTER + 1  # no progress since 0.0: pieces nobody has are fetched anyway
    j, eff = share_origin(j, seen(), later)
    after = [e for e in eff if isinstance(e, tr.SetPriorities)][0]
    assert all(after.priorities[p] > offload.FROM_PEERS for p in theirs)
    # the first of them to arrive is progress, but the others are still fetched (they waited
    # a whole STUCK_AFTER again before: bench.swarm --slow-node 10, the others Ready at 64 s)
    first, rest = theirs[0], theirs[1:]
    got = tuple(p == first for p in range(PIECES))
    j = replace(j, last_change=later + 1)
    j, eff = share_origin(j, seen(have=got), later + 1)
    web = [e for e in eff if isinstance(e, tr.WebSeed)][-1]
    assert web.on and set(rest) <= web.pieces and first not in web.pieces
    # ... until a peer has one (it comes from there) or it is held here
    avail = tuple(int(p == rest[0]) for p in range(PIECES))
    j, eff = share_origin(j, seen(have=got, available=avail), later + 2)
    web = [e for e in eff if isinstance(e, tr.WebSeed)][-1]
    assert rest[0] not in web.pieces and set(rest[1:]) <= web.pieces
    assert rest[0] not in j.stuck and first not in j.stuck


def test_a_live_owner_making_progress_is_never_doubled_by_the_stuck_fallback():
    j, _ = share_origin(job(checked_at=0.0), seen(), now=T0)
    theirs = [p for p, o in enumerate(j.owner_of) if o != ME]
    # bytes keep arriving (from the owners, through the swarm): last_change keeps moving
    t, done = T0, 0
    while t < 3 * tr.STUCK_AFTER:
        t += 1.0
        done += 1
        j, eff = step_job(j, seen(bytes_done=done), now=t)
        prio = [e for e in eff if isinstance(e, tr.SetPriorities)][0].priorities
        assert all(prio[p] == 0 for p in theirs)


# -- one pass ---------------------------------------------------------------------------------


def obs(name: str, *versions: ObservedVersion, active: str | None = None,
        link: str | None = None, draining_since: float | None = None) -> ObservedDataset:
    return ObservedDataset(name, {v.info_hash: v for v in versions}, active, link, draining_since)


def done(ih: str, version: str = "v1") -> ObservedVersion:
    return ObservedVersion(ih, version, True, 1000, 1.0)


def test_a_dataset_no_longer_placed_drains_then_is_evicted_after_the_grace_period():
    s = state([node("n1", 1), node("n2", 2)], [dataset("x", Placement(nodes=("n2",)))])
    observed = {"x": obs("x", done(IH), active=IH, link="/data/ds/x", draining_since=1000.0)}
    plan = make_plan(s, "n1", ["/data"], observed)
    d = decide_pass(plan, observed, {}, grace_period=120, now=1100.0)
    assert d.rows[DatasetName("x")].phase == "Draining"
    assert d.wanted == {IH: "x"}  # still seeded to the new holders
    assert tr.MarkDraining(DatasetName("x")) in d.effects
    assert not any(isinstance(e, tr.Evict) for e in d.effects)
    assert d.requeue_after == 20.5  # the pass right after the grace period ends
    d = decide_pass(plan, observed, {}, grace_period=120, now=1120.0)
    assert DatasetName("x") not in d.rows and d.wanted == {}
    assert d.effects[-2:] == (tr.DropJob(IH), tr.Evict(DatasetName("x"), IH, "v1", d.effects[-1].reason))  # type: ignore[union-attr]
    assert d.requeue_after == tr.PASS_INTERVAL


def test_draining_starts_now_when_not_marked_yet():
    s = state([node("n1", 1), node("n2", 2)], [dataset("x", Placement(nodes=("n2",)))])
    observed = {"x": obs("x", done(IH), active=IH, link="/data/ds/x")}
    d = decide_pass(make_plan(s, "n1", ["/data"], observed), observed, {}, 30, now=5.0)
    assert d.rows[DatasetName("x")].phase == "Draining" and d.requeue_after == 30.5


def test_a_failed_job_is_dropped_and_started_again_by_the_next_pass():
    s = state([node("n1")], [dataset("x")])
    plan = make_plan(s, "n1", ["/data"], {})
    d = decide_pass(plan, {}, {IH: Stage.FAILED}, 600, 0.0)
    assert [type(e).__name__ for e in d.effects[:2]] == ["DropJob", "StartJob"]
    assert d.rows[DatasetName("x")].phase == "Pending"
    d = decide_pass(plan, {}, {IH: Stage.FETCHING}, 600, 0.0)  # in flight: kept as it is
    assert not any(isinstance(e, (tr.DropJob, tr.StartJob)) for e in d.effects)
    assert d.rows[DatasetName("x")].keep
    d = decide_pass(plan, {}, {}, 600, 0.0)
    assert [type(e).__name__ for e in d.effects[:1]] == ["StartJob"]


def test_a_suspended_version_keeps_seeding_and_nothing_is_evicted():
    s = state([node("n1")], [dataset("x", ih=OLD, version="v2", suspend=True)])
    observed = {"x": obs("x", done(OLD), done(IH), active=OLD, link="/data/ds/x")}
    d = decide_pass(make_plan(s, "n1", ["/data"], observed), observed, {}, 600, 0.0)
    assert d.rows[DatasetName("x")].phase == "Suspended"
    assert d.wanted == {OLD: "x"}
    assert not any(isinstance(e, (tr.Evict, tr.StartJob)) for e in d.effects)


def test_a_suspended_version_not_on_disk_is_not_seeded():
    s = state([node("n1")], [dataset("x", suspend=True)])
    d = decide_pass(make_plan(s, "n1", ["/data"], {}), {}, {}, 600, 0.0)
    assert d.rows[DatasetName("x")].phase == "Suspended" and d.wanted == {}


def test_a_complete_version_is_activated_and_ready():
    s = state([node("n1")], [dataset("x")])
    observed = {"x": obs("x", done(IH))}
    d = decide_pass(make_plan(s, "n1", ["/data"], observed), observed, {}, 600, 0.0)
    assert [e for e in d.effects if isinstance(e, tr.Activate)][0].target.name == "x"
    row = d.rows[DatasetName("x")]
    assert row.phase == "Ready" and row.complete and d.wanted == {IH: "x"}


def test_unlocked_datasets_wait_for_their_pin():
    s = state([node("n1")], [dataset("x", locked=False)])
    d = decide_pass(make_plan(s, "n1", ["/data"], {}), {}, {}, 600, 0.0)
    row = d.rows[DatasetName("x")]
    assert row.pinning and row.phase == "Pending" and d.effects[-1] == tr.ClearDraining(DatasetName("x"))
    assert not any(isinstance(e, tr.StartJob) for e in d.effects)


def test_requeue_is_the_pass_interval_when_nothing_drains():
    s = state([node("n1")], [dataset("x")])
    assert decide_pass(make_plan(s, "n1", ["/data"], {}), {}, {}, 600, 0.0).requeue_after \
        == tr.PASS_INTERVAL


def test_an_origin_that_trickles_is_a_stall():
    """1 KiB a tick (every 10 s) from the origin: bytes arrive, no piece completes, no error."""
    j = job()
    now = 0.0
    received = 0
    while now <= tr.STALL_AFTER + 20:
        now += 10
        received += 1024
        j, eff = step_job(j, seen(web_seed_on=True, bytes_received=received), now)
        if j.stage is Stage.FAILED:
            break
    assert j.stage is Stage.FAILED and j.failure is not None
    assert j.failure.reason is tr.FailureReason.STALLED and "bytes/s" in j.failure.message
    assert tr.WebSeed(IH, False) in eff


def test_a_slow_but_steady_origin_is_not_a_stall():
    j, now, received = job(), 0.0, 0
    for _ in range(100):  # 1000 s at 4 KiB/s
        now += 10
        received += 40 << 10
        j, _ = step_job(j, seen(web_seed_on=True, bytes_received=received), now)
    assert j.stage is Stage.FETCHING


def test_waiting_for_peers_with_the_origin_off_is_not_a_stall():
    j, now = job(), 0.0
    for _ in range(100):
        now += 10
        j, _ = step_job(j, seen(web_seed_on=False), now)
    assert j.stage is Stage.FETCHING


def test_a_node_done_with_its_share_takes_a_slow_owners_untouched_runs_and_keeps_them():
    j, _ = share_origin(job(checked_at=0.0), seen(), now=T0)
    mine = tuple(o == ME for o in j.owner_of)
    bits = {n: tuple(o == n for o in j.owner_of) for n in (N2, N3)}
    # N2 is done, N3 (lagging) has nothing yet: this node and N2 split N3's runs (each once)
    ph = {N2: bits[N2], N3: (False,) * PIECES}
    avail = tuple(int(h) for h in bits[N2])
    # (8 pieces are too few to judge a lag by: both saw N3 lag earlier)
    j = replace(j, laggards=frozenset({N3}))
    j2, eff = share_origin(j, seen(have=mine, available=avail, peer_have=ph), now=T0 + 1)
    j2_n2, _ = share_origin(j, seen(
        me=N2, peer_ip={ME: "127.0.0.1", N3: "127.0.0.3"}, have=bits[N2],
        connected=frozenset({"127.0.0.1", "127.0.0.3"}),
        available=tuple(int(h) for h in mine), peer_have={ME: mine, N3: (False,) * PIECES}),
        now=T0 + 1)
    n3_runs = {p // j.run for p, o in enumerate(j.owner_of) if o == N3}
    # ... all of them: N3 lags, so it keeps only the runs it has started
    assert j2.taken | j2_n2.taken == n3_runs and not j2.taken & j2_n2.taken
    assert j2.taken  # with this info-hash, N3's last run falls to this node
    assert "Note" in kinds(eff)
    web = [e for e in eff if isinstance(e, tr.WebSeed)][-1]
    assert web.on and web.pieces == {p for p in range(PIECES) if p // j.run in j2.taken}
    # N3 then gets a piece of a taken run (from us): the run stays ours, the rest of it
    # still comes from the origin, and a piece at a peer is not fetched twice
    p0 = min(p for p in range(PIECES) if p // j.run in j2.taken)
    later = tuple(p == p0 for p in range(PIECES))
    j3, eff = share_origin(j2, seen(have=mine, available=tuple(
        a + int(x) for a, x in zip(avail, later)), peer_have={N2: bits[N2], N3: later}),
        now=T0 + 2)
    assert j3.taken == j2.taken
    web = [e for e in eff if isinstance(e, tr.WebSeed)][-1]
    assert p0 not in web.pieces


def test_a_node_still_fetching_its_own_share_takes_nothing():
    j, _ = share_origin(job(checked_at=0.0), seen(), now=T0)
    ph = {N2: (False,) * PIECES, N3: (False,) * PIECES}
    j2, _ = share_origin(j, seen(peer_have=ph), now=T0 + 1)
    assert j2.taken == frozenset()


def test_an_owner_whose_bitfield_stops_growing_counts_as_stalled():
    j, _ = share_origin(job(checked_at=0.0), seen(), now=T0)
    n3 = [p for p, o in enumerate(j.owner_of) if o == N3]
    none = (False,) * PIECES
    one = tuple(p == n3[0] for p in range(PIECES))
    j, st = tr.stalled_owners(j, seen(peer_have={N3: none}), 10.0)
    assert st == frozenset()
    j, st = tr.stalled_owners(j, seen(peer_have={N3: one}), 12.0)  # it made progress
    assert st == frozenset()
    j, st = tr.stalled_owners(j, seen(peer_have={N3: one}), 12.0 + tr.OWNER_STALLED_AFTER)
    assert st == {N3}
    # an owner with its whole share is done, not stalled
    full = tuple(o == N3 for o in j.owner_of)
    j, st = tr.stalled_owners(j, seen(peer_have={N3: full}), 30.0)
    j, st = tr.stalled_owners(j, seen(peer_have={N3: full}), 60.0)
    assert st == frozenset()


def test_a_node_that_lags_once_leaves_its_share_for_the_rest_of_the_download():
    j, _ = share_origin(job(checked_at=0.0), seen(), now=T0)
    none = {N2: (False,) * PIECES, N3: (False,) * PIECES}
    assert not offload.lagging(ME, offload.Held.count(j.owner_of, {ME: (False,) * PIECES,
                                                                 **none}))
    # once judged lagging it stays so, though its count catches up (its runs come from takers)
    j2, eff = share_origin(replace(j, lagging=True, laggards=frozenset({N3})),
                           seen(peer_have=none), now=T0 + 1)
    assert j2.lagging and j2.laggards == {N3}
    # lagging and nothing started: nothing from the origin
    web = [e for e in eff if isinstance(e, tr.WebSeed)][-1]
    assert not web.on


def test_a_split_version_takes_no_runs_over_and_never_lags():
    holders = tuple((ME, N2, N3) for _ in range(PIECES))
    j, _ = share_origin(job(checked_at=0.0), seen(holders=holders), now=T0)
    mine = tuple(o == ME for o in j.owner_of)
    none = {N2: (False,) * PIECES, N3: (False,) * PIECES}
    done = {n: tuple(o == n for o in j.owner_of) for n in (N2, N3)}
    j2, _ = share_origin(j, seen(holders=holders, have=mine, peer_have=none), now=T0 + 1)
    assert j2.taken == frozenset()
    j3, _ = share_origin(j, seen(holders=holders, peer_have=done, available=(1,) * PIECES),
                         now=T0 + 1)
    assert not j3.lagging


# -- when to look again --------------------------------------------------------------------


def test_nothing_about_to_change_is_looked_at_every_tick():
    assert tr.next_look([]) == tr.LOOK_EVERY
    assert tr.next_look([(Stage.FETCHING, 100 << 20, 10 << 20, 0.0)]) == tr.LOOK_EVERY
    assert tr.next_look([(Stage.FETCHING, 1 << 20, 0.0, 0.0)]) == tr.LOOK_EVERY  # no rate
    assert tr.next_look([(Stage.DONE, 0, 0.0, 0.0), (Stage.FAILED, 5, 0.0, 0.0)]) \
        == tr.LOOK_EVERY


def test_verifying_and_moving_are_looked_at_soon():
    for stage in (Stage.VERIFYING, Stage.MOVING):
        assert tr.next_look([(Stage.FETCHING, 100 << 20, 1.0, 0.0), (stage, 0, 0.0, 0.0)]) \
            == tr.LOOK_SOON


def test_the_last_bytes_are_looked_at_when_they_are_due():
    # 1 MiB left at 10 MiB/s: due in 0.1 s, before the next tick.
    assert tr.next_look([(Stage.FETCHING, 1 << 20, 10 << 20, 0.0)]) == pytest.approx(0.1)
    # Due at once: no sooner than LOOK_SOON (bounded, never a busy loop).
    assert tr.next_look([(Stage.FETCHING, 1, 10 << 20, 0.0)]) == tr.LOOK_SOON
    # The soonest of several.
    assert tr.next_look([(Stage.FETCHING, 1 << 20, 10 << 20, 0.0),
                         (Stage.FETCHING, 1 << 20, 20 << 20, 0.0)]) == pytest.approx(0.05)
    # Nothing verified for LOOK_QUIET: whatever libtorrent's decaying rate says, the end is
    # not near (a stranded piece waited 10 s at 50 looks a second).
    assert tr.next_look([(Stage.FETCHING, 1, 10 << 20, tr.LOOK_QUIET)]) == tr.LOOK_EVERY


def test_a_version_is_read_directly_only_by_its_only_target_from_scratch():
    yes = dict(alone=True, split=False, from_origin=True, fresh=True)
    assert tr.read_directly(**yes)
    for key, value in (("alone", False), ("split", True), ("from_origin", False),
                       ("fresh", False), ("limited", True), ("solo", False)):
        assert not tr.read_directly(**{**yes, key: value}), key


def test_a_direct_read_hands_over_to_libtorrent_when_another_download_fetches_or_a_pause():
    assert not tr.hand_over_direct(others_fetching=0, paused=False)
    assert tr.hand_over_direct(others_fetching=1, paused=False)
    assert tr.hand_over_direct(others_fetching=0, paused=True)


def test_nobody_is_judged_lagging_in_the_first_lag_after_seconds():
    j, _ = share_origin(job(checked_at=0.0), seen(), now=T0)
    theirs = {n: tuple(o == n for o in j.owner_of) for n in (N2, N3)}  # each holds its share
    bits = {ME: (False,) * PIECES, **theirs}
    # by the counts alone, this node lags
    assert offload.lagging(ME, offload.Held.count(j.owner_of, bits))
    early, eff = share_origin(j, seen(peer_have=theirs), now=tr.LAG_AFTER - 0.1)
    assert not early.lagging and not any("behind the peers" in getattr(e, "event", "")
                                         for e in eff)
    late, eff = share_origin(early, seen(peer_have=theirs), now=tr.LAG_AFTER)
    assert late.lagging
    assert any("behind the peers" in getattr(e, "event", "") for e in eff)


def test_a_node_joining_a_swarm_that_holds_half_the_data_is_judged_at_once():
    """No LAG_AFTER for a late joiner (offload.joined_late): it fetches none of its share,
    and a node far ahead counts it a laggard at its first sight of it."""
    j, _ = share_origin(job(checked_at=0.0), seen(), now=T0)
    full = {N2: (True,) * PIECES, N3: (True,) * PIECES}
    assert T0 < tr.LAG_AFTER
    late, eff = share_origin(j, seen(peer_have=full, available=(2,) * PIECES), now=T0)
    assert late.lagging and any("behind the peers" in getattr(e, "event", "") for e in eff)
    ahead, _ = share_origin(j, seen(have=(True,) * PIECES,
                                    peer_have={N2: (True,) * PIECES, N3: (False,) * PIECES}),
                            now=T0)
    assert ahead.laggards == {N3} and not ahead.lagging


def test_a_peer_is_judged_lag_after_seconds_after_it_was_first_seen():
    """As it judges itself: a peer that appears with nothing while this node is long started
    (and not holding half the data) gets LAG_AFTER to show its pace."""
    j, _ = share_origin(job(checked_at=0.0), seen(), now=T0)
    own = {n: tuple(o == n for o in j.owner_of) for n in (ME, N2, N3)}
    none = (False,) * PIECES
    assert sum(own[ME]) + sum(own[N2]) < PIECES  # nobody holds half: no late joiner
    t = 10.0
    j, _ = share_origin(j, seen(have=own[ME], peer_have={N2: own[N2], N3: none}), now=t)
    assert j.laggards == frozenset() and dict(j.met_at) == {N2: t, N3: t}
    caught_up, _ = share_origin(j, seen(have=own[ME], peer_have={N2: own[N2], N3: own[N3]}),
                                now=t + tr.LAG_AFTER)
    assert caught_up.laggards == frozenset()
    behind, _ = share_origin(j, seen(have=own[ME], peer_have={N2: own[N2], N3: none}),
                             now=t + tr.LAG_AFTER)
    assert behind.laggards == {N3}


def test_a_late_joiner_is_judged_while_it_waits_for_its_other_neighbours():
    """Its first look, as its peers' first sight of it: N3 not connected yet (CONNECT_WAIT),
    N2 holding everything. What it then takes from N2 while it waits does not undo it."""
    full = {N2: (True,) * PIECES}
    waiting = dict(connected=frozenset({"127.0.0.2"}), peer_have=full,
                   available=(1,) * PIECES)
    j, eff = share_origin(job(checked_at=0.0), seen(**waiting), now=0.1)
    assert j.lagging and [e for e in eff if "behind the peers" in getattr(e, "event", "")]
    caught_up = tuple(p < PIECES // 2 for p in range(PIECES))
    j, eff = share_origin(j, seen(**{**waiting, "have": caught_up}), now=tr.CONNECT_WAIT)
    assert j.lagging
    web = [e for e in eff if isinstance(e, tr.WebSeed)][-1]
    assert not web.on


def test_a_node_done_after_a_peer_leaves_a_laggards_runs_to_it_for_a_while():
    """Done times are remembered per node (this one too) and fed to the takeover: N2 was
    seen done before this node, so this node takes none of the lagging N3's runs until
    offload.PRECEDENCE has passed since its own share was done."""
    j, _ = share_origin(job(checked_at=0.0), seen(), now=T0)
    mine = tuple(o == ME for o in j.owner_of)
    n2 = tuple(o == N2 for o in j.owner_of)
    n3_runs = {p // j.run for p, o in enumerate(j.owner_of) if o == N3}
    assert n3_runs
    none = (False,) * PIECES
    j = replace(j, laggards=frozenset({N3}))
    # N2 done, this node not yet: N2's time is noted, nothing is taken
    j, _ = share_origin(j, seen(available=tuple(int(h) for h in n2),
                                peer_have={N2: n2, N3: none}), now=T0 + 1)
    assert dict(j.done_at) == {N2: T0 + 1} and not j.taken
    # this node done a second later: N2 goes first
    s = seen(have=mine, available=tuple(int(h) for h in n2), peer_have={N2: n2, N3: none})
    j, _ = share_origin(j, s, now=T0 + 2)
    assert dict(j.done_at) == {N2: T0 + 1, ME: T0 + 2} and not j.taken
    j, _ = share_origin(j, s, now=T0 + 2 + offload.PRECEDENCE - 0.5)
    assert not j.taken
    # N2 may not be fetching them (it may not see N3): after PRECEDENCE, as before
    j, eff = share_origin(j, s, now=T0 + 2 + offload.PRECEDENCE)
    rv = offload.Rendezvous(IH, {ME, N2, N3})
    assert j.taken == {c for c in n3_runs
                       if [x for x in rv.order(c) if x != N3][0] == ME} != set()
    # new shares (a target died) forget the done times
    j2, _ = share_origin(j, seen(absent=frozenset({N3}), peer_have={N2: n2}), now=T0 + 30)
    assert len(j2.done_at) <= 1 and (not j2.done_at or j2.done_at[0][1] == T0 + 30)


def test_pieces_a_slow_peer_has_held_for_a_while_come_from_the_origin_if_the_downlink_idles():
    """A node done with its own share whose downlink idles, waiting offload.SLOW_HELD_AFTER
    for pieces a peer has (a slow uplink), fetches them from the origin; not while its
    downlink is busy (they are queued, not slow), and not once a new holder has them."""
    j, _ = share_origin(job(checked_at=0.0), seen(), now=T0)
    mine = tuple(o == ME for o in j.owner_of)
    n3 = [p for p, o in enumerate(j.owner_of) if o == N3]
    p3 = n3[0]
    held = tuple(p == p3 for p in range(PIECES))  # N3 has one of its pieces
    none = (False,) * PIECES

    def at(t: float, rx: int, **kw: object) -> tuple[Job, frozenset[int]]:
        nonlocal j
        base = dict(have=mine, available=tuple(int(h) for h in held),
                    peer_have={N2: none, N3: held}, bytes_received=rx)
        j, eff = share_origin(j, seen(**(base | kw)), now=t)
        return j, [e for e in eff if isinstance(e, tr.WebSeed)][-1].pieces

    busy = j
    # 1 MiB/s, then under 100 KiB/s: idle (under IDLE_FRACTION of the peak)
    _, pieces = at(T0 + 1, 0)
    assert p3 not in pieces  # it comes from N3, for now
    at(T0 + 3, 2 << 20)
    _, pieces = at(T0 + 1 + offload.SLOW_HELD_AFTER - 0.1, (2 << 20) + 100_000)
    assert p3 not in pieces
    j2, pieces = at(T0 + 1 + offload.SLOW_HELD_AFTER + 0.1, (2 << 20) + 200_000)
    assert p3 in pieces and j2.slow == {p3}
    assert j2.rx_peak > 0 and j2.rx_recent < tr.IDLE_FRACTION * j2.rx_peak
    # it stays chosen while the downlink is busy fetching it ...
    _, pieces = at(T0 + 8, 8 << 20)
    assert p3 in pieces
    # ... until a done node has it (from which it comes)
    j = replace(j, done_at=j.done_at + ((N2, T0),))
    _, pieces = at(T0 + 10, 8 << 20, available=tuple(2 * int(h) for h in held),
                   peer_have={N2: held, N3: held})
    assert p3 not in pieces and not j.slow
    # a busy downlink (steady 1 MiB/s) waits: the piece is queued, not slow
    j = busy
    for k in range(1, 12):
        _, pieces = at(T0 + k, k << 20)
        assert p3 not in pieces
