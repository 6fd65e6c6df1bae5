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
from typing import AsyncIterator

import structlog
import watchfiles

from reconciler.adapters.config import ConfigError, NodeConfig, load_config
from reconciler.app import sdnotify
from reconciler.desired.revision import state_revision
from reconciler.engine.runner import Runner

log = structlog.get_logger("daemon")

REVISION_POLL = 5.0  # how often the revision itself is checked


class Daemon:
    """Schedules the runner's passes and ticks; decides nothing about the node itself."""

    def __init__(self, config_path: Path, cfg: NodeConfig) -> None:
        self.config_path = config_path
        self.cfg = cfg
        self.runner = Runner(cfg, last_good=True, api="always")
        self.stop = asyncio.Event()
        self.trigger = asyncio.Event()
        self.reload = False
        self.log = log.bind(node=cfg.node)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        loop.add_signal_handler(signal.SIGINT, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        watcher = asyncio.ensure_future(self._watch())
        watchdog = sdnotify.watchdog_interval()
        last_ping = last_poll = 0.0
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
                    # In a thread: hashing a repo that is not a git work tree reads every file.
                    if await asyncio.to_thread(self._revision) != self.runner.observed:
                        self.trigger.set()
                passed = self.trigger.is_set() or now >= next_pass
                if passed:
                    self.trigger.clear()
                    outcome = await self.runner.run_pass()
                    next_pass = time.monotonic() + outcome.requeue_after
                    if not ready_sent:
                        ready_sent = sdnotify.notify("READY=1", f"STATUS={self.runner.summary()}") or True
                was_busy = self.runner.busy()
                if self.runner.tick():
                    next_pass = 0.0  # a version completed or a torrent arrived: pass now
                if was_busy and not self.runner.busy():
                    sdnotify.notify(f"STATUS={self.runner.summary()}")
                if watchdog and time.monotonic() - last_ping >= watchdog:
                    sdnotify.notify("WATCHDOG=1")
                    last_ping = time.monotonic()
                if next_pass == 0.0 and not passed:
                    continue  # the pass it wants, now: not after one more pause (0.2 s)
                await self.runner.pause(self.stop, self.trigger)
        finally:
            sdnotify.notify("STOPPING=1", "STATUS=stopping")
            self.log.info("daemon stopping")
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await self.runner.close()
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
        self.runner.reconfigure(cfg)
        self.log.info("config reloaded")

    def _revision(self) -> str | None:
        try:
            return state_revision(self.cfg.desired_state.resolve())
        except OSError:
            return None

    async def _watch(self) -> None:
        """Set the trigger on changes in the state repo; re-aim when git-sync swaps the symlink.

        Two watchers: the state repo (its resolved directory) recursively, and the directory
        holding `desiredState` non-recursively, for the symlink swap only. Watching that parent
        recursively, as before, saw every write under it: with stateDir there (say
        /var/lib/syncbit/{repo,state}) each pass's own status write triggered the next pass,
        and an idle daemon burnt a third of a core. The daemon's own files (stateDir, the
        status and metrics files) never trigger a pass, wherever they are."""
        while not self.stop.is_set():
            target = self.cfg.desired_state.resolve()
            link = self.cfg.desired_state
            own = _OwnFiles(self.cfg)
            default = watchfiles.DefaultFilter()  # .git, editor swap files, ...
            # Its own stop event: awatch sets the event it is given when it ends, and the
            # daemon's must be set only to stop the daemon.
            done = asyncio.Event()
            watches = []
            if target.exists():
                watches.append(watchfiles.awatch(
                    target, stop_event=done, recursive=True, debounce=1000,
                    watch_filter=lambda change, path: default(change, path) and own.foreign(path)))
            if link.parent.exists() and link.parent != target:
                watches.append(watchfiles.awatch(
                    link.parent, stop_event=done, recursive=False, debounce=1000,
                    watch_filter=lambda change, path: _is_entry(path, link) and own.foreign(path)))
            if not watches:
                await asyncio.sleep(REVISION_POLL)
                continue
            tasks = [asyncio.ensure_future(self._follow(w, target, done)) for w in watches]
            stop = asyncio.ensure_future(self.stop.wait())
            try:
                await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
            finally:
                done.set()  # every watcher returns within its step (50 ms)
                stop.cancel()
                results = await asyncio.gather(*tasks, return_exceptions=True)
            for r in results:
                if isinstance(r, (OSError, RuntimeError)):
                    self.log.warning("watching the state repo failed; polling only", error=str(r))
                    await asyncio.sleep(REVISION_POLL)
                    break

    async def _follow(self, changes: AsyncIterator[set[tuple[watchfiles.Change, str]]],
                      target: Path, done: asyncio.Event) -> None:
        """Trigger a pass on every batch of changes; end (and end the other watcher) when the
        state repo's link points elsewhere, so that both are re-aimed."""
        async for _changes in changes:
            self.trigger.set()
            if self.cfg.desired_state.resolve() != target:
                done.set()
                return


class _OwnFiles:
    """What the daemon writes itself: stateDir, the status file, the metrics file."""

    def __init__(self, cfg: NodeConfig) -> None:
        self.files = {str(cfg.status_file.absolute()), str(cfg.metrics_file.absolute())}
        roots = {cfg.state_dir.absolute()}
        try:
            roots.add(cfg.state_dir.resolve())
        except OSError:
            pass
        self.dirs = tuple(str(r) for r in roots)

    def foreign(self, path: str) -> bool:
        if path in self.files:
            return False
        return not any(path == d or path.startswith(d.rstrip("/") + "/") for d in self.dirs)


def _is_entry(path: str, link: Path) -> bool:
    """A change to `desiredState`'s own entry in its parent (git-sync's symlink swap)."""
    return Path(path).name == link.name


def run(config_path: Path, cfg: NodeConfig) -> int:
    return asyncio.run(Daemon(config_path, cfg).run())
