"""`syncbit-reconcile`: the command line (DESIGN §7). Exit 2 on usage or node-config errors."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from reconciler.adapters.config import ConfigError, NodeConfig, config_path, load_config
from reconciler.adapters.state_lock import StateDirBusy
from reconciler.app.exit_codes import EXIT_NOT_READY, EXIT_READY, EXIT_REJECTED, EXIT_USAGE

if TYPE_CHECKING:
    from reconciler.app.ui import WaitProgress

COMMANDS = ("plan", "validate", "lock", "publish", "status", "wait")


def _config_arg(p: argparse.ArgumentParser, top: bool = False) -> None:
    p.add_argument("--config", metavar="P", default=None if top else argparse.SUPPRESS,
                   help="node config (default: $SYNCBIT_CONFIG, else /etc/syncbit/config.yaml)")


EPILOG_MAIN = """\
examples:
  syncbit-reconcile --config /etc/syncbit/config.yaml      # the daemon (what systemd runs)
  syncbit-reconcile --once --timeout 600                   # converge once; exit 0 when all Ready
  syncbit-reconcile plan                                   # what a pass would change here
  syncbit-reconcile validate /srv/syncbit-state            # a state repo's CI check
  syncbit-reconcile publish ckpt /data/ckpt/step-1200 --version step-1200  # then git commit
  syncbit-reconcile status --cluster                       # every node, through its API
  syncbit-reconcile wait llama-70b --timeout 7200          # an init container's readiness gate

exit codes: 0 ready/ok, 1 not ready (or invalid, timed out), 2 usage or node-config error,
3 revision rejected. `syncbit-reconcile COMMAND --help` shows each command's examples.
"""

EPILOG_PLAN = """\
examples:
  syncbit-reconcile plan --config /etc/syncbit/config.yaml
  syncbit-reconcile plan --json | jq '.actions[] | select(.kind == "fetch") | .dataset'
  syncbit-reconcile --dry-run                              # the same as plan

Placement the revision cannot satisfy (as `validate` warns) goes to stderr, one
"warning: " line each (in --json: "warnings"); it does not change the exit code.
exit codes: 0 planned; 1 this node is not in the inventory; 2 node-config error;
3 revision rejected (the errors are printed, FILE:LINE:COL: FIELD: MESSAGE).
"""

EPILOG_VALIDATE = """\
examples:
  syncbit-reconcile validate .                             # in the state repo's CI
  syncbit-reconcile validate /srv/syncbit-state 2>warnings.txt
  syncbit-reconcile validate --config /etc/syncbit/config.yaml   # a node config
  syncbit-reconcile validate examples/desired-state --config examples/node-a.yaml

Errors go to stdout, one per line: FILE:LINE:COL: FIELD: MESSAGE. Warnings (placement that
cannot be satisfied as written: more replicas than matching nodes, a selector next to nodes:,
...) go to stderr prefixed "warning: " and do not change the exit code.
exit codes: 0 valid (warnings or not); 1 invalid; 2 DIR or P is not a file/directory, usage.
"""

EPILOG_LOCK = """\
examples:
  syncbit-reconcile lock /srv/syncbit-state                # every dataset with a source
  syncbit-reconcile lock . llama-70b eval-set              # only these, then: git commit
  HF_TOKEN=... syncbit-reconcile lock . llama-70b          # credentials from the environment

exit codes: 0 locked; 1 a source failed (the others are still written); 2 usage.
"""

EPILOG_PUBLISH = """\
examples:
  syncbit-reconcile publish ckpt /data/ckpt/step-1200 --version step-1200 --repo /srv/state-checkout
  syncbit-reconcile publish ckpt step-1200 --version step-1200 --node gpu-01   # new dataset

Sets spec.version and spec.source.node (name, path) of DATASET in the state repo checkout
(--repo, default .), keeping the YAML's comments; creates DATASET.yaml (placement all: true)
when the dataset does not exist and --node names the publishing node. PATH is made absolute
and must exist here: run it on the publishing node. Commit the change yourself, then gate
consumers with `syncbit-reconcile wait DATASET`. The publishing node serves PATH only if it
lies under its config's publishRoots. A published version is immutable: a new version each time.
exit codes: 0 edited (not committed); 1 unknown dataset, bad path, same version, or the edit
would not validate (file left as it was); 2 usage.
"""

EPILOG_STATUS = """\
examples:
  syncbit-reconcile status                                 # this node's status file, a table
  syncbit-reconcile status --cluster                       # every Node's GET /status
  syncbit-reconcile status --json | jq '.datasets[] | select(.phase != "Ready")'
  watch -c syncbit-reconcile status                        # coloured on a terminal

exit code: 0 (also with no status file yet: a note on stderr, `null` with --json).
"""

EPILOG_WAIT = """\
examples:
  syncbit-reconcile wait llama-70b                         # block until Ready here
  syncbit-reconcile wait llama-70b --timeout 7200 --config /etc/syncbit/config.yaml
  syncbit-reconcile wait eval-set --timeout 600 && python train.py

A progress bar shows on a terminal (bytesDone/bytesTotal from the status file).
exit codes: 0 this node serves the version the current revision declares; 1 timed out,
Failed, or (at once) the dataset is not declared or not placed on this node; 2 node config.
"""


def _sub(sub: "argparse._SubParsersAction[argparse.ArgumentParser]", name: str, help: str,
         epilog: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=help[:1].upper() + help[1:] + ".",
                          epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="syncbit-reconcile",
        description="Converge this node to the datasets its git-synced desired state places on it.",
        epilog=EPILOG_MAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    _config_arg(p, top=True)
    p.add_argument("--once", action="store_true", help="converge once, print a summary, exit")
    p.add_argument("--timeout", type=float, metavar="S", help="with --once: give up after S seconds")
    p.add_argument("--linger", type=float, metavar="S", default=60.0,
                   help="with --once: keep seeding up to S seconds while inventory peers still "
                        "download from this node (default 60)")
    p.add_argument("--dry-run", action="store_true", help="same as the `plan` command")
    p.add_argument("--json", action="store_true", help="with --dry-run: machine-readable output")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    sp = _sub(sub, "plan", "show what a pass would change on this node", EPILOG_PLAN)
    _config_arg(sp)
    sp.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                    help="machine-readable output")

    sv = _sub(sub, "validate", "check a state repo (for its CI) and/or a node config",
              EPILOG_VALIDATE)
    sv.add_argument("dir", type=Path, metavar="DIR", nargs="?", default=None,
                    help="the state repo (a directory); optional with --config")
    sv.add_argument("--config", dest="validate_config", type=Path, metavar="P", default=None,
                    help="validate the node config file P too (as the daemon would load it)")

    sl = _sub(sub, "lock", "pin datasets: read sources, write torrents, set spec.lock",
              EPILOG_LOCK)
    sl.add_argument("dir", type=Path, metavar="DIR", help="the state repo (a checkout you commit)")
    sl.add_argument("datasets", nargs="*", metavar="DATASET", help="only these (default: all)")

    su = _sub(sub, "publish", "point a dataset at a directory on a node (edits the YAML)",
              EPILOG_PUBLISH)
    su.add_argument("dataset", metavar="DATASET")
    su.add_argument("path", metavar="PATH", help="the directory (or file) to publish")
    su.add_argument("--version", required=True, metavar="V", help="the new spec.version")
    su.add_argument("--repo", type=Path, default=Path("."), metavar="DIR",
                    help="the state repo checkout (default: .)")
    su.add_argument("--node", metavar="NAME", default=None,
                    help="the publishing node (default: the dataset's current one)")

    ss = _sub(sub, "status", "this node's status as a table", EPILOG_STATUS)
    _config_arg(ss)
    ss.add_argument("--cluster", action="store_true", help="every node, through its API")
    ss.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                    help="the status document(s) as JSON")

    sw = _sub(sub, "wait", "block until DATASET is Ready on this node", EPILOG_WAIT)
    _config_arg(sw)
    sw.add_argument("dataset", metavar="DATASET")
    sw.add_argument("--timeout", type=float, metavar="S", default=argparse.SUPPRESS,
                    help="give up after S seconds (exit 1); default: wait forever")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "validate":  # logs nothing: no structlog (and the rich it loads)
            if args.dir is None and args.validate_config is None:
                print("usage: syncbit-reconcile validate [-h] [--config P] [DIR]\n"
                      "syncbit-reconcile validate: error: DIR or --config P is required",
                      file=sys.stderr)
                return EXIT_USAGE
            return cmd_validate(args.dir, args.validate_config)
        import structlog

        from reconciler.app import log as logging_setup

        logging_setup.configure()
        if args.command == "lock":
            return cmd_lock(args.dir, args.datasets)
        if args.command == "publish":
            from reconciler.app.publish import publish
            return publish(args.repo, args.dataset, args.path, args.version, args.node)
        cfg = load_config(config_path(args.config))
        structlog.contextvars.bind_contextvars(node=cfg.node)  # on every log line
        logging_setup.set_node(cfg.node)  # ... also those logged from threads
        if args.command == "plan" or args.dry_run:
            return cmd_plan(cfg, args.json)
        if args.command == "status":
            return cmd_status(cfg, args.json, args.cluster)
        if args.command == "wait":
            return cmd_wait(cfg, args.dataset, args.timeout)
        if args.once:
            return cmd_once(cfg, args.timeout, args.linger)
        from reconciler.app.daemon import run
        return run(config_path(args.config), cfg)
    except ConfigError as e:
        for line in str(e).splitlines():
            print(f"syncbit-reconcile: {line}", file=sys.stderr)
        return EXIT_USAGE
    except StateDirBusy as e:
        print(f"syncbit-reconcile: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def cmd_validate(root: Path | None, config: Path | None = None) -> int:
    """Exit 0 valid, 1 invalid, 2 when DIR/P is missing or of the wrong kind. Warnings (stderr,
    `warning: ` then FILE:LINE:COL: FIELD: MESSAGE) never change the exit code."""
    code = 0
    if config is not None:
        code = _validate_config(config)
        if code == EXIT_USAGE:
            return code
    if root is not None:
        code = max(code, _validate_state(root))
    return code


def _validate_config(path: Path) -> int:
    if not path.is_file():
        print(f"syncbit-reconcile: {path}: not a file", file=sys.stderr)
        return EXIT_USAGE
    try:
        cfg = load_config(path)
    except ConfigError as e:
        errors = str(e).splitlines()
        for line in errors:
            print(line)  # the loader's own FILE:LINE:COL: FIELD: MESSAGE lines
        print(f"{path}: {len(errors)} error(s)", file=sys.stderr)
        return 1
    print(f"{path}: valid node config (node {cfg.node}, desiredState {cfg.desired_state})")
    return 0


def _validate_state(root: Path) -> int:
    from reconciler.core.placement_warnings import placement_warnings
    from reconciler.model.desired import DesiredState
    from reconciler.desired.revision import state_revision
    from reconciler.desired.validate import load_desired_state

    if not root.is_dir():
        print(f"syncbit-reconcile: {root}: not a directory", file=sys.stderr)
        return EXIT_USAGE
    root = root.resolve()  # once: a git-sync symlink swap must not mix two revisions
    result = load_desired_state(root, state_revision(root))
    if isinstance(result, DesiredState):
        print(f"{root}: valid ({len(result.nodes)} nodes, {len(result.datasets)} datasets) "
              f"at revision {result.revision}")
        for w in placement_warnings(result):
            print(f"warning: {w}", file=sys.stderr)
        return 0
    for e in result:
        print(e)
    print(f"{root}: {len(result)} error(s)", file=sys.stderr)
    return 1


def cmd_lock(root: Path, datasets: list[str]) -> int:
    import asyncio

    from reconciler.app.lock import lock_state_repo

    if not root.is_dir():
        print(f"syncbit-reconcile: {root}: not a directory", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(lock_state_repo(root, datasets))


def _load_or_reject(cfg: NodeConfig):  # type: ignore[no-untyped-def]
    from reconciler.engine.inputs import load
    from reconciler.app.ui import print_rejected
    loaded = load(cfg)
    if loaded.state is None:
        print_rejected(loaded.revision, loaded.errors)
    return loaded


def cmd_plan(cfg: NodeConfig, as_json: bool) -> int:
    from reconciler.core.placement_warnings import placement_warnings
    from reconciler.engine.inputs import node_problem, plan_for
    from reconciler.app.ui import print_plan

    loaded = _load_or_reject(cfg)
    if loaded.state is None:
        return EXIT_REJECTED
    problem = node_problem(cfg, loaded.state)
    if problem:
        print(f"syncbit-reconcile: {problem}", file=sys.stderr)
        return EXIT_NOT_READY
    plan = plan_for(cfg, loaded.state)
    warnings = [str(w) for w in placement_warnings(loaded.state)]
    if as_json:
        acting = [a for a in plan.actions if a.kind != "unchanged"]
        print(json.dumps({"node": plan.node, "revision": plan.revision,
                          "actions": [a.to_json() for a in acting],
                          "warnings": warnings,
                          "summary": {k: plan.count(k) for k in  # type: ignore[arg-type]
                                      ("fetch", "update", "activate", "evict", "unchanged",
                                       "blocked", "suspended")}}, indent=2))
    else:
        print_plan(plan)
        for w in warnings:  # as `validate` prints them: stderr, the exit code unchanged
            print(f"warning: {w}", file=sys.stderr)
    return EXIT_READY


def cmd_once(cfg: NodeConfig, timeout: float | None, linger: float) -> int:
    import asyncio

    from reconciler.engine.runner import CLOSE_BUDGET, run_once
    from reconciler.app.ui import ProgressView, print_status

    if timeout is not None:
        _hard_stop_after(timeout + CLOSE_BUDGET + HARD_STOP_SLACK)
    with ProgressView() as view:
        doc, result = asyncio.run(run_once(cfg, timeout, view.update, linger))
    print_status(doc)
    return {"Converged": EXIT_READY, "Rejected": EXIT_REJECTED}.get(result, EXIT_NOT_READY)


HARD_STOP_SLACK = 15.0  # seconds past --timeout and the close budget before a hard exit


def _hard_stop_after(seconds: float) -> None:
    """The last resort behind `--timeout`: a read stuck in the kernel (NFS, a worker thread)
    cannot be cancelled, and Python waits for its threads at exit; this ends the process."""
    import os
    import threading

    def stop() -> None:
        print(f"syncbit-reconcile: still running {seconds:g}s after the start despite "
              "--timeout; exiting now", file=sys.stderr, flush=True)
        os._exit(EXIT_NOT_READY)

    t = threading.Timer(seconds, stop)
    t.daemon = True
    t.start()


def cmd_status(cfg: NodeConfig, as_json: bool, cluster: bool) -> int:
    from reconciler.adapters.status_file import read_status
    from reconciler.app.ui import print_status

    if cluster:
        from reconciler.app.cluster import cmd_status_cluster
        return cmd_status_cluster(cfg, as_json)
    doc = read_status(cfg.status_file)
    if doc is None:
        # Exit 0 as DESIGN §7 says: "no pass yet" is an answer, not a failure of `status`.
        print(f"syncbit-reconcile: no status yet at {cfg.status_file} "
              "(has a pass run on this node?)", file=sys.stderr)
        if as_json:
            print("null")
        return 0
    if as_json:
        print(json.dumps(doc, indent=2))
    else:
        print_status(doc)
    return 0


def cmd_wait(cfg: NodeConfig, dataset: str, timeout: float | None) -> int:
    """Block until this node serves the version the current revision declares for `dataset`.

    The status file says what the running reconciler serves; the state repo says what it
    must serve. Ready at an older version is not ready. A dataset not declared, or not placed
    on this node, fails at once: nothing will ever make it Ready here."""
    view = None
    if sys.stderr.isatty():  # a progress bar on a terminal; rich is not even loaded otherwise
        from reconciler.app.ui import WaitProgress
        view = WaitProgress(dataset)
    with view if view is not None else contextlib.nullcontext():
        code, message = _wait_until(cfg, dataset, timeout, view)
    print(message, file=sys.stdout if code == EXIT_READY else sys.stderr)
    return code


def _wait_until(cfg: NodeConfig, dataset: str, timeout: float | None,
                view: "WaitProgress | None") -> tuple[int, str]:
    from reconciler.adapters.status_file import read_status
    from reconciler.desired.revision import state_revision

    deadline = None if timeout is None else time.monotonic() + timeout
    seen_revision: str | None = None
    want: Wanted | str | None = None
    while True:
        try:
            revision = state_revision(cfg.desired_state.resolve())
        except OSError:
            revision = None
        if revision is None or revision != seen_revision:
            seen_revision, want = revision, _wanted(cfg, dataset)
        if isinstance(want, str):
            return EXIT_NOT_READY, f"{dataset}: {want}"
        doc = read_status(cfg.status_file) or {}
        datasets = doc.get("datasets")
        found = datasets.get(dataset) if isinstance(datasets, dict) else None
        d: dict[str, object] = found if isinstance(found, dict) else {}
        current = want is not None and d.get("version") == want.version \
            and (want.info_hash is None or d.get("infoHash") == want.info_hash)
        if view is not None:
            view.update(d if current else {}, "" if current else _waiting_for(d, want))
        if current and d.get("phase") == "Ready":
            return EXIT_READY, f"{dataset}: Ready at {d.get('path')} (version {d.get('version')})"
        if current and d.get("phase") == "Failed":
            return EXIT_NOT_READY, f"{dataset}: Failed: {d.get('error')}"
        if deadline is not None and time.monotonic() >= deadline:
            return EXIT_NOT_READY, (f"{dataset}: timed out after {timeout:g}s; "
                                    f"{_waiting_for(d, want)}")
        time.sleep(0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic())))


@dataclass(frozen=True)
class Wanted:
    version: str
    info_hash: str | None  # None: an unlocked dataset, pinned when first read
    revision: str


def _wanted(cfg: NodeConfig, dataset: str) -> Wanted | str | None:
    """What `wait` waits for; a reason string when it never will be; None when there is no
    good revision yet (keep waiting)."""
    from reconciler.core.placement import datasets_for_node, place
    from reconciler.engine.inputs import effective_state, load

    state = effective_state(cfg, load(cfg))
    if state is None:
        return None
    d = state.datasets.get(dataset)
    if d is None:
        return f"not declared in revision {state.revision}"
    if cfg.node not in state.nodes:
        return f"node {cfg.node} is not in the inventory of revision {state.revision}"
    if dataset not in datasets_for_node(place(state), cfg.node):
        return f"not placed on node {cfg.node} in revision {state.revision}"
    return Wanted(d.version, d.lock.info_hash if d.lock else None, state.revision)


def _waiting_for(d: dict[str, object], want: Wanted | None) -> str:
    if want is None:
        return "no good revision of the state repo yet"
    if not d:
        return f"version {want.version} wanted; not in this node's status yet"
    return (f"version {want.version} wanted (revision {want.revision[:12]}); this node has "
            f"{d.get('version')} {d.get('phase')}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
