"""`core.publish`: which paths a node publishes, and published versions staying immutable."""

from __future__ import annotations

from reconciler.core.publish import Published, conflict, inside_roots, refusal


def test_inside_roots_compares_whole_segments() -> None:
    roots = ["/data/ckpt", "/scratch/"]
    assert inside_roots("/data/ckpt", roots)
    assert inside_roots("/data/ckpt/step-1200/model.bin", roots)
    assert inside_roots("/scratch/x", roots)
    assert not inside_roots("/data/ckpt2/step-1", roots)
    assert not inside_roots("/data", roots)
    assert not inside_roots("/etc/passwd", [])


def test_refusal_names_the_node_the_path_and_the_roots() -> None:
    assert refusal("gpu-01", "/data/ckpt/s1", "/data/ckpt/s1", ["/data/ckpt"]) is None
    msg = refusal("gpu-01", "/home/me/s1", "/home/me/s1", ["/data/ckpt"])
    assert msg == ("node gpu-01 refuses to publish /home/me/s1: outside its publishRoots "
                   "(/data/ckpt)")


def test_refusal_of_a_symlink_shows_where_it_resolves() -> None:
    msg = refusal("gpu-01", "/data/ckpt/escape", "/etc/ssh", ["/data/ckpt"])
    assert msg == ("node gpu-01 refuses to publish /data/ckpt/escape (it resolves to /etc/ssh): "
                   "outside its publishRoots (/data/ckpt)")
    assert "publishRoots (none)" in str(refusal("n", "/x", "/x", []))


def test_a_version_published_with_other_bytes_is_a_conflict() -> None:
    before = {"step-1200": Published("step-1200", "a" * 64, "/data/ckpt/step-1200")}
    assert conflict("gpu-01", "ckpt", "step-1200", "a" * 64, before) is None  # same bytes
    assert conflict("gpu-01", "ckpt", "step-1300", "b" * 64, before) is None  # a new version
    msg = conflict("gpu-01", "ckpt", "step-1200", "b" * 64, before)
    assert msg is not None
    assert msg.startswith("version 'step-1200' of dataset ckpt was already published by node "
                          "gpu-01 from /data/ckpt/step-1200 with other bytes")
    assert "immutable" in msg and "a" * 16 in msg and "b" * 16 in msg


def test_a_target_node_refuses_other_bytes_for_a_version_it_holds() -> None:
    from reconciler.core.publish import offered_conflict
    held = {"a" * 64: "step-1200", "c" * 64: "step-1100"}
    assert offered_conflict("gpu-01", "ckpt", "step-1200", "a" * 64, held) is None
    assert offered_conflict("gpu-01", "ckpt", "step-1300", "b" * 64, held) is None
    msg = offered_conflict("gpu-01", "ckpt", "step-1200", "b" * 64, held)
    assert msg is not None and msg.startswith(
        "node gpu-01 offers version 'step-1200' of dataset ckpt with other bytes than this node "
        "holds") and "immutable" in msg
