"""The pass runner: one level-triggered pass, end to end, for `--once` and the daemon alike.

desired-state files -> validated model -> placement -> plan -> executor -> store -> status.

`Runner.run_pass()` returns the pass result and when the next pass is due, as
controller-runtime's `Result{RequeueAfter}` does; `--once` and the daemon only schedule passes
and ticks. The runner owns the rules that must never break: a rejected revision touches
nothing (the daemon keeps converging to the last good one), and the status file is written
here and nowhere else, atomically.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Mapping

import structlog

from reconciler.adapters import lastgood
from reconciler.adapters.api import ApiServer, inventory_hosts
from reconciler.adapters.config import NodeConfig
from reconciler.adapters.state_lock import StateDirLock
from reconciler.adapters.status_file import NodeMetrics, now_rfc3339, read_status, write_status
from reconciler.core.conditions import pass_result
from reconciler.core.placement import datasets_for_node, place
from reconciler.core.placement_warnings import placement_warnings
from reconciler.core.transfer import PASS_INTERVAL
from reconciler.engine.executor import Executor
from reconciler.engine.inputs import (Loaded, api_listen, load, node_problem, peer_listen, placed,
                                      plan_for)
from reconciler.engine.pinning import POLL_MAX
from reconciler.model.desired import DesiredState
from reconciler.model.status import DatasetStatus, NodeReport, Rejected, Result

__all__ = ["Loaded", "PassOutcome", "Runner", "load", "node_problem", "plan_for", "run_once"]

log = structlog.get_logger("reconcile")

POLL = 0.2  # seconds between looks at libtorrent
STATUS_EVERY = 2.0  # status file refresh while data moves
DEFAULT_LINGER = 60.0  # --once: longest time to keep seeding for peers after converging
LINGER_GRACE = 3.0  # --once: how long to wait for target peers that never connected
ASKED_GRACE = POLL_MAX + 2.0  # --once: a peer that asked for a torrent this recently is coming
CLOSE_BUDGET = 15.0  # --once: longest wait for the session to close (resume data: 10 s)


@dataclass(frozen=True)
class PassOutcome:
    result: Result
    requeue_after: float  # seconds until the next pass is due at the latest (0: now)
    revision: str


ApiPolicy = Literal["always", "when-pinning", "never"]


class Runner:
    """Runs passes for one node and owns what lives across them: the executor (libtorrent
    session, gateway), the node's API, the last revision seen and applied, the status file.

    `last_good`: converge to the last good revision while the newest is rejected (the daemon);
    without it a rejected revision ends the pass with nothing applied (`--once`).
    `api`: serve the node's HTTP API always (the daemon), only while an unlocked dataset is
    placed here, so peers can fetch its torrent (`--once`), or never.
    """

    def __init__(self, cfg: NodeConfig, *, last_good: bool, api: ApiPolicy,
                 on_progress: Callable[[Mapping[str, DatasetStatus]], None] | None = None
                 ) -> None:
        self.cfg = cfg
        self.last_good = last_good
        self.api_policy = api
        self.on_progress = on_progress
        self.lock = StateDirLock(cfg.state_dir).acquire()  # StateDirBusy: another process
        self.executor: Executor | None = None
        self.api: ApiServer | None = None
        previous = read_status(cfg.status_file) or {}
        self.previous = _datasets_of(previous)  # shown until this process holds statuses
        applied = previous.get("lastAppliedRevision")
        self.observed: str | None = None
        self.applied: str | None = applied if isinstance(applied, str) else None
        self.rejected: Rejected | None = None
        self.problem: str | None = None
        self.placement_warnings: tuple[str, ...] = ()  # of the revision being applied
        self._warned_for: str | None = None
        self.pass_started = now_rfc3339()
        self.pass_finished: str | None = None
        self.doc: dict[str, object] | None = None
        self._reported_rejection: str | None = None
        self._written_at = 0.0
        self._written_phases: dict[str, str] = {}
        self._was_busy = False
        self.metrics = NodeMetrics(cfg.state_dir)  # metricsFile and the API's /metrics
        self.log = log.bind(node=cfg.node)

    # -- passes --------------------------------------------------------------------------------

    async def run_pass(self) -> PassOutcome:
        """One level-triggered pass from the whole desired state and the store.

        The pure, CPU-heavy part (revision, load, validate, keeping the last good revision,
        placement) runs in a worker thread, so that the event loop keeps serving the API and
        the gateway (libtorrent seeds from its own threads) during a long pass; the executor
        then applies the result on the loop, its placement already computed."""
        self.pass_started, self.pass_finished = now_rfc3339(), None
        self.metrics.pass_started(self.pass_started)
        started = time.monotonic()
        self.log.debug("pass started")
        loaded, state, root = await asyncio.to_thread(self._prepare)
        self.observed = loaded.revision
        if state is None:
            return self._finish(PASS_INTERVAL, started)
        if self.problem:
            self.log.error("node not in inventory", error=self.problem)
            return self._finish(PASS_INTERVAL, started)
        if self.executor is None:
            self.executor = Executor(self.cfg, peer_listen(self.cfg, state))
            await self.executor.start()
        await self._ensure_api(state)
        on_loop = time.monotonic()
        self.executor.apply(state, root, loaded.root)
        self.log.debug("plan applied", seconds=round(time.monotonic() - on_loop, 3))
        self.applied = state.revision
        self._was_busy = self.executor.busy()
        if not self._was_busy:
            self.pass_finished = now_rfc3339()
        return self._finish(0.0 if self.executor.wants_pass else self.executor.requeue_after,
                            started)

    def _prepare(self) -> tuple[Loaded, DesiredState | None, Path]:
        """The worker thread's part of a pass; touches no libtorrent and no event loop."""
        loaded = load(self.cfg)
        state, root = self._choose_state(loaded)
        if state is not None:
            self.problem = node_problem(self.cfg, state)
            if not self.problem:
                placed(self.cfg, state)  # remembered: the executor's `place` compares only
            if self._warned_for != state.revision:  # the same revision: the same warnings
                self.placement_warnings = tuple(str(w) for w in placement_warnings(state))
                self._warned_for = state.revision
                for w in self.placement_warnings:
                    self.log.warning("placement unsatisfiable", revision=state.revision,
                                     warning=w)
        return loaded, state, root

    def _choose_state(self, loaded: Loaded) -> tuple[DesiredState | None, Path]:
        """The newest revision if it is good; else, for the daemon, the last good one."""
        if loaded.state is not None:
            self.rejected = None
            try:
                lastgood.save(self.cfg.state_dir, loaded.root, loaded.state)
            except OSError as exc:  # the repo moved on mid-copy, a full disk: next pass retries
                self.log.warning("cannot keep the last good revision", error=str(exc),
                                 revision=loaded.revision)
            return loaded.state, loaded.root
        self.rejected = Rejected(loaded.revision, loaded.errors)
        if self._reported_rejection != loaded.revision:
            self._reported_rejection = loaded.revision
            for e in loaded.errors:
                self.log.error("revision rejected", revision=loaded.revision, file=e.file,
                               line=e.line, field=e.field, error=e.message)
        if not self.last_good:
            return None, loaded.root
        snap = lastgood.load(self.cfg.state_dir)
        if snap is None:
            self.problem = "no good revision of the state repo yet"
            return None, loaded.root
        self.log.info("converging to the last good revision", revision=snap[1].revision)
        return snap[1], snap[0]

    def _finish(self, requeue_after: float, started: float) -> PassOutcome:
        self.write_status()
        self.log.debug("pass finished", revision=self.observed,
                       seconds=round(time.monotonic() - started, 3))
        return PassOutcome(self.result(), requeue_after, self.observed or "")

    async def _ensure_api(self, state: DesiredState) -> None:
        inventory = inventory_hosts(a for n in state.nodes.values() for a in (n.api, n.peer))
        if self.api is not None:
            self.api.set_inventory(inventory)  # /v1/... answers this pass's inventory only
            self.api.set_desired(state)  # /cluster asks this pass's inventory
        if self.api is not None or self.api_policy == "never":
            return
        if self.api_policy == "when-pinning":
            placed = datasets_for_node(place(state), self.cfg.node)
            if not any(state.datasets[n].lock is None for n in placed):
                return
        listen = api_listen(self.cfg, state)
        api = ApiServer(listen, lambda: self.doc, metadata=self._pin_answer, inventory=inventory,
                        metrics=self.metrics, desired=state)
        try:
            await api.start()
        except (OSError, ValueError) as e:
            # --once next to a running daemon: the peers then build the torrent themselves.
            self.log.warning("cannot serve the API", listen=listen, error=str(e))
            return
        self.api = api

    def _pin_answer(self, dataset: str, key: str) -> tuple[int, bytes | dict[str, object]]:
        if self.executor is None:
            return 404, {"state": "unknown", "node": self.cfg.node}
        return self.executor.pinner.answer(dataset, key)

    # -- between passes ------------------------------------------------------------------------

    def tick(self) -> bool:
        """Advance downloads; refresh the status while data moves. True when a pass is wanted
        now: a version completed (what it replaces may go) or a torrent arrived."""
        ex = self.executor
        if ex is None:
            return False
        ex.tick()
        busy = ex.busy()
        if self._was_busy and not busy:
            self.pass_finished = now_rfc3339()
        if self.on_progress is not None:
            self.on_progress(ex.statuses)
        phases = {n: s.phase for n, s in ex.statuses.items()}
        if (self._was_busy != busy or phases != self._written_phases
                or (busy and time.monotonic() - self._written_at >= STATUS_EVERY)):
            self.write_status()
        self._was_busy = busy
        return ex.wants_pass

    def busy(self) -> bool:
        return self.executor is not None and self.executor.busy()

    async def pause(self, *wake: asyncio.Event) -> None:
        """Wait until the next tick is due: POLL, or sooner while a download is about to
        change stage (Executor.next_look), or at once when a verification ends or one of
        `wake` is set."""
        ex = self.executor
        delay = POLL if ex is None else min(POLL, ex.next_look())
        events = [*wake, *([ex.woken] if ex is not None else [])]
        if not events:
            await asyncio.sleep(delay)
            return
        waits = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        if ex is not None:
            ex.woken.clear()

    def result(self) -> Result:
        r = pass_result(self.statuses(), rejected=self.rejected is not None)
        return "Failed" if self.problem and r != "Rejected" else r

    def statuses(self) -> Mapping[str, DatasetStatus]:
        return self.executor.statuses if self.executor is not None else self.previous

    def write_status(self) -> None:
        """The one place the status file and the metrics file are written."""
        statuses = dict(self.statuses())
        report = NodeReport(self.cfg.node, self.observed, self.applied, self.pass_started,
                            self.pass_finished, self.result(), statuses, self.rejected,
                            self.placement_warnings)
        try:
            self.doc = write_status(self.cfg.status_file, self.cfg.metrics_file, report,
                                    self.metrics)
        except OSError as e:
            self.log.error("cannot write status", error=str(e))
        self._written_at = time.monotonic()
        self._written_phases = {n: s.phase for n, s in statuses.items()}

    def reconfigure(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        if self.executor is not None:
            self.executor.reconfigure(cfg)

    def draining(self) -> bool:
        return any(s.phase == "Draining" for s in self.statuses().values())

    def summary(self) -> str:
        statuses = self.statuses()
        ready = sum(1 for s in statuses.values() if s.phase == "Ready")
        rej = f"; revision {self.rejected.revision[:12]} rejected" if self.rejected else ""
        return f"{ready}/{len(statuses)} datasets Ready at {str(self.applied)[:12]}{rej}"

    async def close(self) -> None:
        """Stop the session (resume data saved), write the final status, stop the API."""
        if self.executor is not None:
            await self.executor.close()
        if self.pass_finished is None:
            self.pass_finished = now_rfc3339()
        self.write_status()
        if self.api is not None:
            await self.api.stop()
            self.api = None
        self.lock.release()

    # -- --once --------------------------------------------------------------------------------

    async def linger(self, seconds: float, deadline: float | None) -> None:
        """Keep seeding after this node is done while inventory peers still download from it,
        so simultaneous `--once` runs share the origin's bytes instead of each fetching them.
        Bounded by `seconds` (and the run's deadline); target peers that never connected are
        waited for only LINGER_GRACE seconds, or while peers keep asking for an unlocked
        dataset's torrent here (they poll at least every POLL_MAX seconds)."""
        ex = self.executor
        if ex is None:
            return
        done = time.monotonic()
        end = done + seconds
        while time.monotonic() < end and not _past(deadline):
            self.tick()
            if not ex.peers_still_need_us() and (
                    ex.unseen_target_peers() == 0 or time.monotonic() - done >= LINGER_GRACE
            ) and not ex.pinner.asked_within(ASKED_GRACE):
                return
            await self.pause()


async def run_once(cfg: NodeConfig, timeout: float | None = None,
                   on_progress: Callable[[Mapping[str, DatasetStatus]], None] | None = None,
                   linger: float = DEFAULT_LINGER) -> tuple[dict[str, object], Result]:
    """Converge this node once: passes until nothing is in flight (a pass again whenever a
    version completes or a torrent arrives), then linger. Returns the status document and the
    pass result.

    `timeout` bounds the whole run, whatever it waits on (a hung origin read included): then
    every dataset not converged is Failed with the reason, and the session is closed within
    CLOSE_BUDGET seconds more."""
    deadline = None if timeout is None else time.monotonic() + timeout
    runner = Runner(cfg, last_good=False, api="when-pinning", on_progress=on_progress)
    outcome: PassOutcome | None = None
    try:
        async with asyncio.timeout_at(_loop_time(deadline)):
            outcome = await runner.run_pass()
            if runner.executor is not None:
                if on_progress is not None:
                    on_progress(runner.statuses())
                # Tick at once (the first tick turns the web seeds on) and after every pause,
                # before asking whether anything is still under way: what finished during the
                # pause (a torrent build refused, say) reaches the status first.
                while True:
                    if runner.tick():
                        outcome = await runner.run_pass()
                    if not runner.busy():
                        break
                    await runner.pause()
                await runner.linger(linger, deadline)
    except TimeoutError:
        pass
    finally:
        if _past(deadline) and runner.executor is not None:
            runner.executor.give_up(f"not converged within --timeout {timeout:g}s")
        try:
            await asyncio.wait_for(runner.close(), CLOSE_BUDGET)
        except TimeoutError:
            log.error("closing the session took too long; status written without it",
                      node=cfg.node, budget=CLOSE_BUDGET)
            runner.write_status()
    result = runner.result()
    log.info("pass finished", node=cfg.node, revision=outcome.revision if outcome else None,
             result=result, datasets={n: s.phase for n, s in sorted(runner.statuses().items())})
    return runner.doc or {}, result


def _loop_time(deadline: float | None) -> float | None:
    """A time.monotonic() deadline on the event loop's clock (the same clock on Linux, but
    asyncio does not promise it)."""
    if deadline is None:
        return None
    return asyncio.get_running_loop().time() + (deadline - time.monotonic())


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _datasets_of(previous: Mapping[str, object]) -> dict[str, DatasetStatus]:
    out = {}
    for name, d in (previous.get("datasets") or {}).items():  # type: ignore[attr-defined]
        try:
            out[name] = DatasetStatus.from_json(d)
        except (TypeError, ValueError, AttributeError):
            continue  # a hand-edited or foreign file: that entry is not shown
    return out
