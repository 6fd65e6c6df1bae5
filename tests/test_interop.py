"""Lock torrents are standard BitTorrent: a third-party client (rtorrent, v1 only) downloads a
dataset from a Syncbit node when it connects from an inventory address, and gets nothing from any
other address (DESIGN.md §3 `lock`, §5; notes/libtorrent.md §6, §9).

The Syncbit side is a real daemon (`python -m reconciler --config CFG`) seeding its dataset; the
client is rtorrent, told about the node by a one-peer HTTP tracker (tests/tracker.py) through an
`announce` key added to a copy of the lock, outside the info dict (same info-hash).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import libtorrent as lt
import pytest

from harness import (until, Daemon, NodeHome, StateRepo, dataset_yaml, free_port, http_source, nodes_yaml,
                     pseudo_random, sha256_file, write_data)
from origin_server import OriginServer
from tracker import Tracker

RTORRENT = shutil.which("rtorrent")
pytestmark = pytest.mark.skipif(
    RTORRENT is None,
    reason="rtorrent is not installed (Debian/Ubuntu: apt-get install -y rtorrent); "
           "it is the third-party v1 client these interop tests run against")

# seed1 = 127.0.0.111 (the Syncbit daemon), client = 127.0.0.112 (inventory, runs rtorrent),
# STRANGER is in no Node document.
FIRST_IP = 111
STRANGER = "127.0.0.113"
# Sizes off piece boundaries, so the torrent has pad files (rtorrent writes them as `.pad/<N>`).
FILES = {
    "a.bin": pseudo_random((2 << 20) + 777, "interop-a"),
    "b/c.bin": pseudo_random((1 << 20) + 4242, "interop-c"),
    "d.bin": pseudo_random(1 << 20, "interop-d"),
}
DOWNLOAD_TIMEOUT = 60.0
STRANGER_WAIT = 15.0



def node_peer(nodes_text: str, name: str) -> tuple[str, int]:
    block = nodes_text.split(f"name: {name}\n")[1]
    host, _, port = block.split("peer: ")[1].split("\n")[0].strip().strip('"').rpartition(":")
    return host, int(port)


def real_files(root: Path) -> dict[str, Path]:
    """Files under `root` by relative path, without rtorrent's `.pad/` files."""
    if not root.is_dir():
        return {}
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*"))
            if p.is_file() and ".pad" not in p.relative_to(root).parts}


class RTorrent:
    """rtorrent 0.9.x headless (notes/libtorrent.md §9), bound to one loopback address, in its own
    directories. It runs until killed: callers poll the files under `out`."""

    def __init__(self, base: Path, torrent: Path, bind: str, port: int) -> None:
        self.base = base
        self.out = base / "out"
        self.session = base / "session"
        self.out.mkdir(parents=True)
        self.session.mkdir()
        self.log_path = base / "rtorrent.log"
        self.argv = [
            RTORRENT, "-n",
            "-o", "system.daemon.set=true",
            "-o", f"directory.default.set={self.out}",
            "-o", f"session.path.set={self.session}",
            "-o", f"network.bind_address.set={bind}",
            "-o", "dht.mode.set=disable",
            "-o", "protocol.pex.set=no",
            "-o", f"network.port_range.set={port}-{port}",
            str(torrent),
        ]
        self._log = open(self.log_path, "wb")
        # Its own session (process group), so stop() reaches anything it spawned, and HOME in
        # its tmp dir: it reads and writes nothing of the user running the tests.
        self.proc = subprocess.Popen(
            self.argv, cwd=base, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, "HOME": str(base), "TERM": "dumb"}, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


@dataclass
class Setup:
    origin: OriginServer
    daemon: Daemon
    tracker: Tracker
    lock: Path  # the lock as committed
    client_torrent: Path  # the lock + `announce`
    name: str  # the torrent's top directory
    client: tuple[str, int]  # the `client` Node's spec.peer
    origin_bytes_at_ready: int


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("interop")
    origin = OriginServer(write_data(base / "origin", FILES)).start()
    stack: list[Callable[[], None]] = [origin.stop]
    try:
        repo = StateRepo.create(base / "state")
        nodes = nodes_yaml(["seed1", "client"], first_ip=FIRST_IP)
        repo.write("nodes.yaml", nodes)
        repo.write("ds.yaml", dataset_yaml("data", http_source(origin.url, FILES),
                                           placement={"nodes": ("seed1",)}))
        res = repo.lock()
        assert res.returncode == 0, res.stdout + res.stderr
        rev = repo.commit("interop")
        lock = repo.root / "locks" / "data.torrent"
        assert lock.is_file(), sorted(p.as_posix() for p in repo.root.rglob("*.torrent"))

        home = NodeHome("seed1", base / "seed1", repo.root).write_config()
        daemon = Daemon(home)
        stack.append(daemon.stop)
        daemon.wait_phase("data", "Ready", rev, timeout=90)
        origin_bytes = origin.bytes_sent

        tracker = Tracker([node_peer(nodes, "seed1")]).start()
        stack.append(tracker.stop)

        # The client's copy: the lock plus a top-level `announce`; the info dict is untouched.
        doc = lt.bdecode(lock.read_bytes())
        doc[b"announce"] = tracker.announce_url.encode()
        client_torrent = base / "client.torrent"
        client_torrent.write_bytes(lt.bencode(doc))
        ti_lock, ti_client = lt.torrent_info(str(lock)), lt.torrent_info(str(client_torrent))
        assert ti_client.info_hashes().v1 == ti_lock.info_hashes().v1
        assert ti_client.info_hashes().v2 == ti_lock.info_hashes().v2
        # The layout is the one this test is about: a hybrid torrent with pad files.
        assert ti_lock.info_hashes().has_v1() and ti_lock.info_hashes().has_v2()
        v1_files = doc[b"info"][b"files"]
        assert any(b"p" in f.get(b"attr", b"") for f in v1_files), v1_files

        yield Setup(origin, daemon, tracker, lock, client_torrent, ti_lock.name(),
                    node_peer(nodes, "client"), origin_bytes)
    finally:
        for stop in reversed(stack):
            stop()


@pytest.fixture
def rtorrents(tmp_path) -> Iterator[Callable[..., RTorrent]]:
    started: list[RTorrent] = []

    def start(name: str, torrent: Path, bind: str, port: int) -> RTorrent:
        r = RTorrent(tmp_path / name, torrent, bind, port)
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()


def test_rtorrent_on_an_inventory_address_downloads_the_dataset_from_the_node(setup, rtorrents):
    ip, port = setup.client
    rt = rtorrents("client", setup.client_torrent, ip, port)
    want = {rel: sha256_file(setup.origin.root / rel) for rel in FILES}
    top = rt.out / setup.name

    def complete() -> bool:
        assert rt.alive(), rt.logs()
        files = real_files(top)
        return files.keys() == want.keys() and all(
            p.stat().st_size == len(FILES[rel]) and sha256_file(p) == want[rel]
            for rel, p in files.items())

    try:
        until(complete, DOWNLOAD_TIMEOUT, "rtorrent to download the dataset")
    except AssertionError as e:
        raise AssertionError(f"{e}\nfiles: {sorted(real_files(top))}\nannounces: "
                             f"{setup.tracker.announces}\nrtorrent: {rt.logs()[-2000:]}\n"
                             f"daemon: {setup.daemon.logs()[-4000:]}") from None
    assert setup.tracker.announced_from(ip), setup.tracker.announces  # it did bind to `client`
    # Every byte came from the node: the origin served nothing after seed1 became Ready.
    assert setup.origin.bytes_sent == setup.origin_bytes_at_ready
    # rtorrent also wrote the pad files, as zeros.
    for p in (top / ".pad").glob("*"):
        assert p.read_bytes().count(0) == p.stat().st_size


def test_rtorrent_on_a_stranger_address_gets_nothing(setup, rtorrents):
    daemon_log_before = len(setup.daemon.logs())
    rt = rtorrents("stranger", setup.client_torrent, STRANGER, free_port(STRANGER))
    top = rt.out / setup.name

    def leaked() -> list[str]:
        """Real files that hold any non-zero byte (rtorrent may create them empty or sparse)."""
        return [rel for rel, p in real_files(top).items() if p.read_bytes().strip(b"\0")]

    def blocked() -> bool:
        new = setup.daemon.logs()[daemon_log_before:]
        return any("peer blocked" in line and STRANGER in line for line in new.splitlines())

    # The stranger must get nothing at any moment, and the node must refuse it: watch until the
    # refusal is logged plus 5 s more (rtorrent retries), STRANGER_WAIT at most.
    deadline = time.monotonic() + STRANGER_WAIT
    refused_at: float | None = None
    while time.monotonic() < deadline:
        assert rt.alive(), rt.logs()
        assert not leaked(), f"the stranger received data: {leaked()}"
        if refused_at is None and blocked():
            refused_at = time.monotonic()
        if refused_at is not None and time.monotonic() - refused_at >= 5:
            break
        time.sleep(0.2)
    assert not leaked(), f"the stranger received data: {leaked()}"
    assert setup.tracker.announced_from(STRANGER), setup.tracker.announces  # it did try
    assert refused_at is not None, ("no `peer blocked` line for the stranger in the daemon log:\n"
                                    + setup.daemon.logs()[daemon_log_before:][-4000:])
