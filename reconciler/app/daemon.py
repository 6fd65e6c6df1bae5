"""The daemon: `syncbit-reconcile` without `--once`, under systemd.

It keeps one executor (libtorrent session, gateway) alive, so everything this node holds is
seeded to its peers, and runs a level-triggered pass whenever the state repo changes (watchfiles,
debounced, plus a revision poll that catches git-sync's symlink swaps and empty commits) and on a
timer. A rejected revision is reported and the node keeps converging to the last good one.
Signals: SIGTERM/SIGINT stop cleanly (resume data saved, status written), SIGHUP reloads the
node config. sd_notify: READY, STATUS, WATCHDOG, STOPPING.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import structlog
import watchfiles

from reconciler.adapters import lastgood

from reconciler.app import sdnotify
from reconciler.adapters.api import ApiServer
from reconciler.adapters.config import ConfigError, NodeConfig, load_config
from reconciler.model.desired import DesiredState
from reconciler.desired.revision import state_revision
from reconciler.engine.executor import Executor
from reconciler.engine.runner import load, node_problem, peer_listen
from reconciler.adapters.status_file import NodeReport, Rejected, now_rfc3339, pass_result, write_status

log = structlog.get_logger("daemon")

TICK = 0.2  # seconds between looks at libtorrent
PASS_INTERVAL = 60.0  # full level-triggered pass even when nothing changed
REVISION_POLL = 5.0  # how often the revision itself is checked
STATUS_EVERY = 2.0  # status file refresh while something moves
DRAIN_RECHECK = 2.0  # pass interval while a dataset is Draining


class Daemon:
    def __init__(self, config_path: Path, cfg: NodeConfig) -> None:
        self.config_path = config_path
        self.cfg = cfg
        self.executor: Executor | None = None
        self.api: ApiServer | None = None
        self.doc: dict[str, object] | None = None
        self.stop = asyncio.Event()
        self.trigger = asyncio.Event()
        self.reload = False
        self.observed: str | None = None
        self.applied: str | None = None
        self.rejected: Rejected | None = None
        self.problem: str | None = None
        self.pass_started = now_rfc3339()
        self.pass_finished: str | None = None
        self.log = log.bind(node=cfg.node)
        self._reported_rejection: str | None = None

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        loop.add_signal_handler(signal.SIGINT, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        watcher = asyncio.ensure_future(self._watch())
        watchdog = sdnotify.watchdog_interval()
        last_ping = last_status = last_poll = 0.0
        next_pass = 0.0
        ready_sent = False
        self.log.info("daemon starting", config=str(self.config_path),
                      desired_state=str(self.cfg.desired_state))
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                if self.reload:
                    self._reload_config()
                if now - last_poll >= REVISION_POLL:
                    last_poll = now
                    if self._revision() != self.observed:
                        self.trigger.set()
                if self.trigger.is_set() or now >= next_pass:
                    self.trigger.clear()
                    await self._pass()
                    next_pass = time.monotonic() + (DRAIN_RECHECK if self._draining() else PASS_INTERVAL)
                    self._write_status()
                    last_status = time.monotonic()
                    if not ready_sent:
                        ready_sent = sdnotify.notify("READY=1", f"STATUS={self._summary()}") or True
                if self.executor is not None:
                    was_busy = self.executor.busy()
                    self.executor.tick()
                    if was_busy and not self.executor.busy():
                        self.pass_finished = now_rfc3339()
                        self._write_status()
                        last_status = time.monotonic()
                        sdnotify.notify(f"STATUS={self._summary()}")
                if time.monotonic() - last_status >= STATUS_EVERY and self._moving():
                    self._write_status()
                    last_status = time.monotonic()
                if watchdog and time.monotonic() - last_ping >= watchdog:
                    sdnotify.notify("WATCHDOG=1")
                    last_ping = time.monotonic()
                try:
                    await asyncio.wait_for(self.stop.wait(), TICK)
                except asyncio.TimeoutError:
                    pass
        finally:
            sdnotify.notify("STOPPING=1", "STATUS=stopping")
            self.log.info("daemon stopping")
            watcher.cancel()
            if self.executor is not None:
                await self.executor.close()
            self._write_status()
            if self.api is not None:
                await self.api.stop()
        return 0

    def _on_hup(self) -> None:
        self.reload = True
        self.trigger.set()

    def _reload_config(self) -> None:
        self.reload = False
        try:
            cfg = load_config(self.config_path)
        except ConfigError as e:
            self.log.error("config reload failed; keeping the running config", error=str(e))
            return
        if cfg.node != self.cfg.node or cfg.state_dir != self.cfg.state_dir:
            self.log.error("config reload cannot change node or stateDir; restart instead")
            return
        self.cfg = cfg
        if self.executor is not None:
            self.executor.reconfigure(cfg)
        self.log.info("config reloaded")

    def _draining(self) -> bool:
        """Something waits for its grace period to end: look again soon, not in a minute."""
        return self.executor is not None and any(
            s.phase == "Draining" for s in self.executor.statuses.values())

    def _moving(self) -> bool:
        return self.executor is not None and self.executor.busy()

    def _revision(self) -> str | None:
        try:
            return state_revision(self.cfg.desired_state.resolve())
        except OSError:
            return None

    async def _watch(self) -> None:
        """Set the trigger on file changes; re-aim when git-sync swaps the symlink."""
        while not self.stop.is_set():
            target = self.cfg.desired_state.resolve()
            paths = [p for p in (target, self.cfg.desired_state.parent) if p.exists()]
            if not paths:
                await asyncio.sleep(REVISION_POLL)
                continue
            try:
                async for _changes in watchfiles.awatch(*paths, stop_event=self.stop,
                                                        recursive=True, debounce=1000):
                    self.trigger.set()
                    if self.cfg.desired_state.resolve() != target:
                        break
            except (OSError, RuntimeError) as e:
                self.log.warning("watching the state repo failed; polling only", error=str(e))
                await asyncio.sleep(REVISION_POLL)

    # -- one pass ----------------------------------------------------------------------------

    async def _pass(self) -> None:
        loaded = load(self.cfg)
        self.observed = loaded.revision
        source_root = loaded.root
        state: DesiredState | None
        if loaded.state is None:
            self.rejected = Rejected(loaded.revision, loaded.errors)
            if self._reported_rejection != loaded.revision:
                self._reported_rejection = loaded.revision
                for e in loaded.errors:
                    self.log.error("revision rejected", revision=loaded.revision, file=e.file,
                                   line=e.line, field=e.field, error=e.message)
            snap = lastgood.load(self.cfg.state_dir)
            state, root = (snap[1], snap[0]) if snap else (None, loaded.root)
            if state is not None:
                self.log.info("converging to the last good revision", revision=state.revision)
        else:
            self.rejected = None
            state, root = loaded.state, loaded.root
            lastgood.save(self.cfg.state_dir, root, state)
        if state is None:
            self.problem = "no good revision of the state repo yet"
            return
        self.problem = node_problem(self.cfg, state)
        if self.problem:
            self.log.error("node not in inventory", error=self.problem)
            return
        if self.executor is None:
            self.executor = Executor(self.cfg, peer_listen(self.cfg, state))
            await self.executor.start()
        if self.api is None:
            listen = self.cfg.listen_api or state.nodes[self.cfg.node].api
            self.api = ApiServer(listen, lambda: self.doc, metadata=self._metadata)
            try:
                await self.api.start()
            except OSError as e:
                self.log.error("cannot start the HTTP API", listen=listen, error=str(e))
                self.api = None
        self.pass_started, self.pass_finished = now_rfc3339(), None
        self.executor.apply(state, root, source_root)
        self.applied = state.revision
        if not self.executor.busy():
            self.pass_finished = now_rfc3339()

    def _metadata(self, dataset: str, key: str) -> tuple[int, bytes | dict]:
        if self.executor is None:
            return 404, {"state": "unknown", "node": self.cfg.node}
        return self.executor.resolver.answer(dataset, key)

    # -- status ------------------------------------------------------------------------------

    def _write_status(self) -> None:
        statuses = dict(self.executor.statuses) if self.executor else {}
        result = pass_result(statuses, rejected=self.rejected is not None)
        if self.problem and result != "Rejected":
            result = "Failed"
        report = NodeReport(self.cfg.node, self.observed, self.applied, self.pass_started,
                            self.pass_finished, result, statuses, self.rejected)
        try:
            self.doc = write_status(self.cfg.status_file, self.cfg.metrics_file, report)
        except OSError as e:
            self.log.error("cannot write status", error=str(e))

    def _summary(self) -> str:
        statuses = self.executor.statuses if self.executor else {}
        ready = sum(1 for s in statuses.values() if s.phase == "Ready")
        rej = f"; revision {self.rejected.revision[:12]} rejected" if self.rejected else ""
        return f"{ready}/{len(statuses)} datasets Ready at {str(self.applied)[:12]}{rej}"


def run(config_path: Path, cfg: NodeConfig) -> int:
    return asyncio.run(Daemon(config_path, cfg).run())
