"""`syncbit-reconcile publish DATASET PATH --version V`: point a dataset at a node's directory.

The helper a training loop calls after writing a checkpoint: it edits (or creates) the
dataset's YAML in the state repo checkout so that `source: {node: {name, path}}` and `version`
name the new checkpoint, keeping the file's comments (ruamel.yaml round trip), and leaves the
commit to the user. The edited repo is validated before it is kept; on any error the file is
left as it was.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from reconciler.adapters import atomic
from reconciler.desired.validate import load_desired_state
from reconciler.model.desired import DesiredState, NodeSource

EXIT_OK, EXIT_FAILED = 0, 1


def _yaml() -> YAML:
    y = YAML(typ="rt", pure=True)
    y.preserve_quotes = True
    y.indent(mapping=2, sequence=4, offset=2)
    y.width = 4096  # never fold a long path
    return y


def _fail(msg: str) -> int:
    print(f"syncbit-reconcile publish: {msg}", file=sys.stderr)
    return EXIT_FAILED


def publish(repo: Path, dataset: str, path: str, version: str, node: str | None) -> int:
    """Edit `repo` so that `dataset` is `version`, published by `node` from `path`."""
    if not repo.is_dir():
        return _fail(f"{repo}: not a directory (--repo: the state repo checkout)")
    path = os.path.abspath(path)
    if not os.path.exists(path):
        return _fail(f"{path}: no such file or directory (run publish on the publishing node, "
                     "after the checkpoint is written)")
    state = load_desired_state(repo, "publish", require_locks=False)
    if not isinstance(state, DesiredState):
        for e in state:
            print(e, file=sys.stderr)
        return _fail(f"{repo}: fix these errors first")
    d = state.datasets.get(dataset)
    if d is None:
        if node is None:
            return _fail(f"no dataset {dataset} in {repo}; to create it, give --node NAME "
                         "(the publishing node)")
        if node not in state.nodes:
            return _fail(f"unknown node {node}: no Node document has this name in {repo}")
        target = repo / f"{dataset}.yaml"
        if target.exists():
            return _fail(f"{target} exists and does not define dataset {dataset}")
        text = _new_dataset(dataset, node, path, version)
        return _keep(repo, target, None, text, f"created dataset {dataset}")
    if not isinstance(d.source, NodeSource):
        return _fail(f"dataset {dataset} has a {d.source.type} source: publish edits only "
                     "datasets published from a node (source: {node: {name, path}})")
    if d.version == version:
        return _fail(f"dataset {dataset} is already at version {version}: a published version "
                     "is immutable; give a new --version")
    node = node or d.source.name
    if node not in state.nodes:
        return _fail(f"unknown node {node}: no Node document has this name in {repo}")
    assert d.position is not None
    target = repo / d.position.file
    before = target.read_text()
    y = _yaml()
    docs = list(y.load_all(before))
    doc = next(x for x in docs if isinstance(x, dict) and x.get("kind") == "Dataset"
               and isinstance(x.get("metadata"), dict) and x["metadata"].get("name") == dataset)
    spec = doc["spec"]
    spec["version"] = _like(spec.get("version"), version)
    src = spec["source"]["node"]
    src["name"] = _like(src.get("name"), node)
    src["path"] = _like(src.get("path"), path)
    note = ""
    if "lock" in spec:  # the lock pins the old version's bytes
        del spec["lock"]
        note = " (spec.lock removed: it pinned the previous version; lock again once published)"
    out = io.StringIO()
    y.dump_all(docs, out)
    return _keep(repo, target, before, out.getvalue(),
                 f"dataset {dataset}: version {d.version} -> {version}{note}")


def _like(old: Any, new: str) -> Any:
    """`new` with the quoting style of `old`, when it was quoted."""
    style = getattr(old, "style", None)
    if style is None:
        return new
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString, SingleQuotedScalarString
    return DoubleQuotedScalarString(new) if style == '"' else SingleQuotedScalarString(new)


def _new_dataset(dataset: str, node: str, path: str, version: str) -> str:
    doc = CommentedMap()
    doc["apiVersion"] = "syncbit/v1"
    doc["kind"] = "Dataset"
    doc["metadata"] = {"name": dataset}
    doc["spec"] = {"version": version, "source": {"node": {"name": node, "path": path}},
                   "placement": {"all": True}, "path": dataset}
    out = io.StringIO()
    out.write("# Written by syncbit-reconcile publish: placement and path are for you to set.\n")
    _yaml().dump(doc, out)
    return out.getvalue()


def _keep(repo: Path, target: Path, before: str | None, text: str, said: str) -> int:
    """Write `text` to `target` if the repo then validates; else put back what was there."""
    mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
    atomic.write_bytes(target, text.encode(), mode)
    state = load_desired_state(repo, "publish", require_locks=False)
    if not isinstance(state, DesiredState):
        if before is None:
            target.unlink()
        else:
            atomic.write_bytes(target, before.encode(), mode)
        for e in state:
            print(e, file=sys.stderr)
        return _fail(f"{target}: the edit would not validate; left as it was")
    print(f"{said} in {target}; review and commit it (git add, git commit)")
    return EXIT_OK
