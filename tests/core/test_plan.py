from factories import dataset, node, state
from reconciler.model.desired import Placement
from reconciler.core.plan import ObservedDataset, ObservedVersion, make_plan, resolve_path

ROOTS = ["/data"]
A, B, C = "a" * 64, "b" * 64, "c" * 64


def kinds(plan):
    return [(a.kind, a.dataset, a.info_hash) for a in plan.actions]


def obs(name, *versions, active=None, link=None):
    return ObservedDataset(name, {v.info_hash: v for v in versions}, active, link)


def v(ih, version="v1", complete=True, at=1.0):
    return ObservedVersion(ih, version, complete, 10, at if complete else None)


def test_fresh_node_fetches_what_is_placed_on_it_only():
    s = state([node("n1", 1), node("n2", 2)],
              [dataset("mine", Placement(nodes=("n1",))), dataset("theirs", Placement(nodes=("n2",)))])
    p = make_plan(s, "n1", ROOTS, {})
    assert kinds(p) == [("fetch", "mine", A)]
    assert p.actions[0].path == "/data/ds/mine"


def test_unchanged_when_active_at_the_right_path():
    s = state([node("n1")], [dataset("x")])
    p = make_plan(s, "n1", ROOTS, {"x": obs("x", v(A), active=A, link="/data/ds/x")})
    assert kinds(p) == [("unchanged", "x", A)]
    assert p.changes == ()


def test_update_names_the_version_it_replaces():
    s = state([node("n1")], [dataset("x", version="v2", ih=B)])
    p = make_plan(s, "n1", ROOTS, {"x": obs("x", v(A, "v1"), active=A, link="/data/ds/x")})
    assert kinds(p) == [("update", "x", B)]
    assert p.actions[0].from_version == "v1"


def test_activate_when_in_store_but_not_linked_rollback():
    s = state([node("n1")], [dataset("x", version="v1", ih=A)])
    observed = {"x": obs("x", v(A, "v1", at=1), v(B, "v2", at=2), active=B, link="/data/ds/x")}
    p = make_plan(s, "n1", ROOTS, observed)
    assert kinds(p) == [("activate", "x", A)]  # v2 is kept: keepVersions=1


def test_keep_versions_evicts_the_oldest_beyond_the_limit():
    s = state([node("n1")], [dataset("x", version="v3", ih=C, keep_versions=1)])
    observed = {"x": obs("x", v(A, "v1", at=1), v(B, "v2", at=2), v(C, "v3", at=3),
                         active=C, link="/data/ds/x")}
    p = make_plan(s, "n1", ROOTS, observed)
    assert kinds(p) == [("unchanged", "x", C), ("evict", "x", A)]


def test_active_version_is_never_evicted_while_its_successor_downloads():
    s = state([node("n1")], [dataset("x", version="v2", ih=B, keep_versions=0)])
    p = make_plan(s, "n1", ROOTS, {"x": obs("x", v(A), active=A, link="/data/ds/x")})
    assert kinds(p) == [("update", "x", B)]


def test_partial_download_of_an_undesired_version_is_evicted():
    s = state([node("n1")], [dataset("x", version="v3", ih=C)])
    observed = {"x": obs("x", v(A, at=1), v(B, "v2", complete=False), active=A, link="/data/ds/x")}
    p = make_plan(s, "n1", ROOTS, observed)
    assert ("evict", "x", B) in kinds(p)
    assert ("evict", "x", A) not in kinds(p)


def test_dataset_no_longer_placed_is_evicted():
    s = state([node("n1"), node("n2", 2)], [dataset("x", Placement(nodes=("n2",)))])
    p = make_plan(s, "n1", ROOTS, {"x": obs("x", v(A), active=A, link="/data/ds/x")})
    assert kinds(p) == [("evict", "x", A)]
    assert "no longer placed" in p.actions[0].reason


def test_suspended_dataset_is_left_alone():
    s = state([node("n1")], [dataset("x", version="v2", ih=B, suspend=True)])
    p = make_plan(s, "n1", ROOTS, {"x": obs("x", v(A), active=A, link="/data/ds/x")})
    assert kinds(p) == [("suspended", "x", B)]


def test_blocked_outside_roots_keeps_its_data():
    s = state([node("n1")], [dataset("escape", path="/etc/x"), dataset("ok")])
    p = make_plan(s, "n1", ROOTS, {"escape": obs("escape", v(A), active=A, link="/etc/x")})
    by = {a.dataset: a for a in p.actions}
    assert by["escape"].kind == "blocked" and "allowedRoots" in by["escape"].reason
    assert by["ok"].kind == "fetch"
    assert not any(a.kind == "evict" for a in p.actions)


def test_unlocked_without_metadata_is_fetched_and_nothing_of_it_is_evicted():
    s = state([node("n1")], [dataset("fresh", locked=False), dataset("nolock", locked=False,
                                                                     version="v2")])
    observed = {"nolock": obs("nolock", v(A, "v1", at=1), v(B, "v0", complete=False),
                              active=A, link="/data/ds/nolock")}
    p = make_plan(s, "n1", ROOTS, observed)
    assert kinds(p) == [("fetch", "fresh", None), ("update", "nolock", None)]
    by = {a.dataset: a for a in p.actions}
    assert by["nolock"].from_version == "v1"
    assert "builds it from the source" in by["fresh"].reason


def test_unlocked_and_suspended_stays_suspended():
    s = state([node("n1")], [dataset("x", locked=False, suspend=True)])
    p = make_plan(s, "n1", ROOTS, {"x": obs("x", v(A), active=A, link="/data/ds/x")})
    assert kinds(p) == [("suspended", "x", None)]


def test_overlapping_paths_block_the_later_dataset():
    s = state([node("n1")], [dataset("a1", path="models"), dataset("b1", path="models/inner")])
    p = make_plan(s, "n1", ROOTS, {})
    by = {a.dataset: a.kind for a in p.actions}
    assert by == {"a1": "fetch", "b1": "blocked"}


def test_resolve_path():
    assert resolve_path("m/x", ["/data", "/scratch"]) == "/data/m/x"
    assert resolve_path("/scratch/y", ["/data", "/scratch"]) == "/scratch/y"
    for bad in ("/data", "/etc/passwd", "/data/../etc", "/database/x"):
        try:
            resolve_path(bad, ["/data"])
        except ValueError:
            continue
        raise AssertionError(bad)


# -- spec.split (issue 14 item 2) ---------------------------------------------------------------

def _split_state(nodes, copies=1, ih=A):
    from reconciler.model.desired import LockFile
    import dataclasses
    files = tuple((f"shard-{i}.bin", 100 + i) for i in range(12))
    d = dataset("sp", ih=ih, split=copies)
    d = dataclasses.replace(d, lock=LockFile("locks/sp.torrent", ih, ih[:40], "sp",
                                             sum(s for _, s in files), files))
    return state([node(n, i + 1) for i, n in enumerate(nodes)], [d]), files


def test_split_target_holds_its_files_and_the_plan_counts_only_them():
    from reconciler.core.split import holders
    s, files = _split_state(["n1", "n2", "n3"], copies=2)
    seen = []
    for n in ("n1", "n2", "n3"):
        p = make_plan(s, n, ROOTS, {})
        t = p.targets["sp"]
        mine = {f for f, _ in files if n in holders("sp", f, ["n1", "n2", "n3"], 2)}
        assert t.files == mine
        assert p.actions[0].kind == "fetch"
        assert p.actions[0].bytes_total == t.bytes_total == sum(sz for f, sz in files if f in mine)
        seen += sorted(mine)
    assert sorted(seen) == sorted(f for f, _ in files for _ in range(2))  # each file twice


def test_split_version_stored_with_the_same_files_is_unchanged_with_others_fetched_again():
    s, _ = _split_state(["n1", "n2", "n3"])
    t = make_plan(s, "n1", ROOTS, {}).targets["sp"]
    same = ObservedVersion(A, "v1", True, t.bytes_total, 1.0, files=t.files)
    p = make_plan(s, "n1", ROOTS, {"sp": obs("sp", same, active=A, link="/data/ds/sp")})
    assert kinds(p) == [("unchanged", "sp", A)]
    # a node added: the split moved files, so the stored version is fetched again (it keeps
    # the files it still holds; the executor prunes the others once the new ones are verified)
    s4, _ = _split_state(["n1", "n2", "n3", "n4"])
    p4 = make_plan(s4, "n1", ROOTS, {"sp": obs("sp", same, active=A, link="/data/ds/sp")})
    t4 = p4.targets["sp"]
    assert t4.files <= t.files  # adding a node only takes files away from n1
    if t4.files != t.files:
        assert kinds(p4) == [("update", "sp", A)]
        assert "no longer held here" in p4.actions[0].reason
    # a version stored whole (not split) is not this split either
    whole = ObservedVersion(A, "v1", True, 1, 1.0)
    p = make_plan(s, "n1", ROOTS, {"sp": obs("sp", whole, active=A, link="/data/ds/sp")})
    assert kinds(p) == [("update", "sp", A)]


def test_adding_a_node_moves_only_the_files_that_must_move_in_the_plan():
    nodes = [f"n{i}" for i in range(1, 6)]
    s, files = _split_state(nodes, copies=2)
    s6, _ = _split_state([*nodes, "n6"], copies=2)
    before = {n: make_plan(s, n, ROOTS, {}).targets["sp"].files for n in nodes}
    after = {n: make_plan(s6, n, ROOTS, {}).targets["sp"].files for n in [*nodes, "n6"]}
    for n in nodes:
        assert after[n] <= before[n]  # an old node only loses files (to n6)
    moved = set().union(*(before[n] - after[n] for n in nodes))
    assert moved == after["n6"]  # and exactly the files n6 gains
