"""bench/origin_trace.py: which bytes the origin sent more than once (pure; synthetic GETs)."""

import json

from bench.origin_trace import Get, load, overlaps


def test_repeats_are_split_by_who_had_the_copy_before():
    gets = [Get("n4", "f", 0, 999, 1000, 10.0, 10.0),  # the slow node's read-ahead
            Get("n2", "f", 500, 1499, 1000, 20.0, 20.0),  # a taker, half of it again
            Get("n1", "f", 800, 1199, 400, 21.0, 21.0),  # a second taker, again
            Get("n3", "g", 0, 99, 100, 1.0, 1.0)]
    r = overlaps(gets, 0.0)
    assert r["sent"] == 2500 and r["unique"] == 1600 and r["excess"] == 900
    assert r["by_pair"] == {"n4->n2": 500, "n4->n1": 200, "n2->n1": 200}
    assert r["by_previous_copy"] == {"n4->n2": 500, "n2->n1": 400}
    assert sum(r["by_kind"].values()) == 900


def test_a_cut_short_copy_counts_only_what_was_sent(tmp_path):
    f = tmp_path / "t.jsonl"
    lines = [{"nodes": {"10.0.0.1": "n1"}, "size": 100},
             {"t0": 0, "t1": 1, "ip": "10.0.0.1", "path": "f", "first": 0, "last": 99,
              "sent": 50},  # before the reset: the lock's read, not measured
             {"reset": 2},
             {"t0": 3, "t1": 4, "ip": "10.0.0.1", "path": "f", "first": 0, "last": 99,
              "sent": 40},
             {"t0": 5, "t1": 6, "ip": "10.0.0.1", "path": "f", "first": 40, "last": 99,
              "sent": 60}]
    f.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    head, gets = load(f)
    assert head["size"] == 100 and [g.node for g in gets] == ["n1", "n1"]
    assert gets[0].aborted and not gets[1].aborted
    assert overlaps(gets, 0.0)["excess"] == 0
