"""Validation of issue 14's keys: selector `matchLabels`/`matchExpressions`, `spec.cordoned`,
`spec.size`; each error with its file, line, column and field."""

from __future__ import annotations

from pathlib import Path

from test_validate import dataset_with, errors, load, only_error, repo, write  # noqa: F401

from reconciler.model.desired import Requirement


def test_selector_with_match_labels_and_expressions_builds_the_model(repo: Path) -> None:
    dataset_with(repo, """
        size: 2GiB
        placement:
          replicas: 2
          selector:
            gpu: h100
            matchLabels: {zone: a}
            matchExpressions:
              - {key: rack, operator: NotIn, values: [r1, r2]}
              - {key: syncbit.dev/coordinator, operator: DoesNotExist}
              - {key: zone, operator: Exists, values: []}
              - {key: gpu, operator: In, values: [h100]}
        """)
    d = load(repo).datasets["d"]
    assert d.size == 2 * 1024**3
    assert dict(d.placement.selector) == {"gpu": "h100", "zone": "a"}
    assert d.placement.match_expressions == (
        Requirement("rack", "NotIn", ("r1", "r2")),
        Requirement("syncbit.dev/coordinator", "DoesNotExist"),
        Requirement("zone", "Exists"), Requirement("gpu", "In", ("h100",)))


def test_values_required_for_in_and_not_in(repo: Path) -> None:
    dataset_with(repo, """
        placement:
          all: true
          selector:
            matchExpressions:
              - key: rack
                operator: In
              - {key: rack, operator: NotIn, values: []}
        """)
    e1, e2 = errors(repo)
    assert (e1.file, e1.line, e1.field) == ("d.yaml", 12, "spec.placement.selector."
                                            "matchExpressions[0].values")
    assert e1.message == "operator In needs values: a non-empty list of label values"
    assert (e2.line, e2.field) == (14, "spec.placement.selector.matchExpressions[1].values")
    assert e2.message == "must not be empty for operator NotIn (as in Kubernetes)"


def test_values_forbidden_for_exists_and_does_not_exist(repo: Path) -> None:
    dataset_with(repo, """
        placement:
          all: true
          selector:
            matchExpressions:
              - {key: rack, operator: DoesNotExist, values: [r1]}
        """)
    e = only_error(repo)
    assert (e.line, e.field) == (12, "spec.placement.selector.matchExpressions[0].values")
    assert e.message.startswith("must not be set for operator DoesNotExist")


def test_unknown_operator_and_bad_key(repo: Path) -> None:
    dataset_with(repo, """
        placement:
          all: true
          selector:
            matchExpressions:
              - {key: "not a label", operator: Like, values: [x]}
        """)
    fields = {e.field for e in errors(repo)}
    assert fields == {"spec.placement.selector.matchExpressions[0].key",
                      "spec.placement.selector.matchExpressions[0].operator"}


def test_unknown_field_in_an_expression(repo: Path) -> None:
    dataset_with(repo, """
        placement:
          all: true
          selector:
            matchExpressions:
              - {key: rack, operator: Exists, value: x}
        """)
    assert only_error(repo).field.startswith("spec.placement.selector.matchExpressions[0]")


def test_a_label_both_plain_and_in_match_labels_with_another_value(repo: Path) -> None:
    dataset_with(repo, """
        placement:
          all: true
          selector: {gpu: h100, matchLabels: {gpu: a100}}
        """)
    e = only_error(repo)
    assert e.field == "spec.placement.selector.matchLabels.gpu"
    assert "also given as a plain pair" in e.message


def test_bad_size(repo: Path) -> None:
    dataset_with(repo, """
        size: lots
        placement: {all: true}
        """)
    assert only_error(repo).field == "spec.size"


def test_cordoned_node(tmp_path: Path) -> None:
    root = tmp_path / "state"
    write(root, "n.yaml", """
        apiVersion: syncbit/v1
        kind: Node
        metadata: {name: gpu-01}
        spec: {peer: "10.0.0.1:6881", api: "10.0.0.1:7070", cordoned: true}
        ---
        apiVersion: syncbit/v1
        kind: Node
        metadata: {name: gpu-02}
        spec: {peer: "10.0.0.2:6881", api: "10.0.0.2:7070", cordoned: yes please}
        """)
    e = only_error(root)
    assert (e.line, e.field) == (9, "spec.cordoned")
    write(root, "n.yaml", """
        apiVersion: syncbit/v1
        kind: Node
        metadata: {name: gpu-01}
        spec: {peer: "10.0.0.1:6881", api: "10.0.0.1:7070", cordoned: true}
        """)
    s = load(root)
    assert s.nodes["gpu-01"].cordoned
