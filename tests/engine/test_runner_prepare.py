"""The pure part of a pass (engine.inputs.prepare), which the daemon runs in a worker thread:
with the process-wide caches warm it must give what computing from scratch gives."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from reconciler.adapters.config import load_config
from reconciler.core.placement import place_uncached
from reconciler.core.plan import make_plan
from reconciler.desired.loader import load_documents, read_locks
from reconciler.desired.revision import state_revision
from reconciler.desired.validate import validate_documents
from reconciler.engine.inputs import placed, prepare
from reconciler.model.desired import DesiredState

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "desired-state"


def _config(tmp_path: Path, repo: Path, node: str) -> Path:
    cfg = tmp_path / "node.yaml"
    cfg.write_text(json.dumps({"node": node, "desiredState": str(repo),
                               "stateDir": str(tmp_path / "state"),
                               "allowedRoots": [str(tmp_path / "data")]}))
    return cfg


def _from_scratch(repo: Path, node: str, roots: tuple[str, ...]):  # type: ignore[no-untyped-def]
    docs = load_documents(repo, cache=None)
    state = validate_documents(docs.documents, read_locks(repo.resolve(), docs.documents),
                               state_revision(repo), docs.errors, cache=None)
    assert isinstance(state, DesiredState)
    assignments = place_uncached(state)
    return state, assignments, make_plan(state, node, roots, {}, assignments)


def test_prepare_twice_and_after_an_edit_equals_computing_from_scratch(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES, repo)
    cfg = load_config(_config(tmp_path, repo, "node-a"))
    for round_ in range(3):  # bounded: cold, warm, after an edit
        if round_ == 2:
            p = repo / "datasets" / "eval.yaml"
            p.write_text(p.read_text().replace("replicas: 2", "replicas: 3"))
        got = prepare(cfg)
        state, assignments, plan = _from_scratch(repo, "node-a", cfg.allowed_roots)
        assert got.loaded.state == state
        assert got.assignments == assignments
        assert got.plan == plan
        assert placed(cfg, state) == assignments


def test_prepare_of_a_rejected_revision_has_no_plan(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES, repo)
    (repo / "broken.yaml").write_text("kind: [unclosed\n")
    got = prepare(load_config(_config(tmp_path, repo, "node-a")))
    assert got.loaded.state is None and got.loaded.errors
    assert got.assignments is None and got.plan is None
