"""A real `syncbit-reconcile` daemon against local strangers (issue 11, items 4 and 6):
a slowloris on its API, a peer endpoint called from outside the inventory, a BitTorrent client
on 127.0.0.1, and the gateway's secret kept out of the log and the status. Every wait is
bounded by a deadline; every process and socket the test starts is stopped or closed by it."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import libtorrent as lt
import pytest

from harness import (Daemon, NodeHome, StateRepo, dataset_yaml, free_port, http_source,
                     nodes_yaml, pseudo_random, write_data)
from origin_server import OriginServer

FIRST_IP = 195
NODE_IP = f"127.0.0.{FIRST_IP}"
STRANGER = "127.0.0.196"  # in no Node document
FILES = {"a.bin": pseudo_random((1 << 20) + 333, "def-a"), "b.bin": pseudo_random(77_777, "def-b")}
# A web-seed URL with its secret, as the gateway builds it.
SECRET_URL = re.compile(r"http://127\.\d+\.\d+\.\d+:\d+/[A-Za-z0-9_-]{40,}/")


@dataclass
class Node:
    daemon: Daemon
    home: NodeHome
    lock: Path
    api: tuple[str, int]
    peer: tuple[str, int]


def _hostport(nodes: str, key: str) -> tuple[str, int]:
    host, _, port = nodes.split(f"{key}: ")[1].split("\n")[0].strip('"').rpartition(":")
    return host, int(port)


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[Node]:
    base = tmp_path_factory.mktemp("defences")
    origin = OriginServer(write_data(base / "origin", FILES)).start()
    daemon: Daemon | None = None
    try:
        repo = StateRepo.create(base / "state")
        nodes = nodes_yaml(["n1"], first_ip=FIRST_IP)
        repo.write("nodes.yaml", nodes)
        repo.write("ds.yaml", dataset_yaml("data", http_source(origin.url, FILES)))
        assert repo.lock().returncode == 0
        rev = repo.commit("defences")
        home = NodeHome("n1", base / "n1", repo.root).write_config()
        daemon = Daemon(home)
        daemon.wait_phase("data", "Ready", rev, timeout=90)
        yield Node(daemon, home, repo.root / "locks" / "data.torrent",
                   _hostport(nodes, "api"), _hostport(nodes, "peer"))
    finally:
        if daemon is not None:
            daemon.stop()
        origin.stop()


def get(url: str, source: str, timeout: float = 5) -> int:
    """GET from a chosen source address (any 127.x works on Linux): the status code."""
    host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
    path = "/" + url.split("//")[1].split("/", 1)[1]
    s = socket.create_connection((host, int(port)), timeout=timeout, source_address=(source, 0))
    try:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        head = s.recv(64)
        return int(head.split(b" ")[1])
    finally:
        s.close()


def test_slowloris_on_the_api_is_closed_and_the_node_stays_up(node: Node) -> None:
    host, port = node.api
    base = f"http://{host}:{port}"
    log_before = len(node.daemon.logs())
    socks: list[socket.socket] = []
    try:
        for _ in range(40):  # far more than the per-address cap (16)
            s = socket.create_connection((host, port), timeout=5, source_address=(STRANGER, 0))
            s.sendall(b"GET /status HTTP/1.1\r\nHo")
            socks.append(s)
        for s in socks:
            s.setblocking(False)
        deadline = time.monotonic() + 30.0  # the header timeout is 10 s
        open_ = set(range(len(socks)))
        healthz: list[int] = []
        while open_ and time.monotonic() < deadline:
            for i in list(open_):
                try:
                    if socks[i].recv(1) == b"":
                        open_.discard(i)  # closed by the node
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    open_.discard(i)
                    continue
                try:
                    socks[i].send(b"s")  # one byte at a time, never finishing the head
                except OSError:
                    open_.discard(i)
            healthz.append(get(base + "/healthz", "127.0.0.1"))
            time.sleep(0.5)
        assert not open_, f"{len(open_)} trickling connections still open after 30 s"
        assert healthz and set(healthz) == {200}, healthz  # answered all along
    finally:
        for s in socks:
            s.close()
    assert node.daemon.proc.poll() is None
    new = node.daemon.logs()[log_before:]
    summaries = [line for line in new.splitlines() if "api connections refused" in line]
    assert 1 <= len(summaries) <= 4, new[-3000:]  # one line per 10 s, not one per connection
    assert len(new) < 20_000, len(new)
    # The status is still written: the node answers and its file parses.
    assert json.loads(node.home.status_file.read_text())["node"] == "n1"


def test_peer_endpoints_answer_the_inventory_only(node: Node) -> None:
    host, port = node.api
    url = f"http://{host}:{port}/v1/metadata/data/{'0' * 32}"
    assert get(url, STRANGER) == 403
    assert get(url, NODE_IP) == 404  # an inventory address: the answer itself
    assert get(f"http://{host}:{port}/status", STRANGER) == 200


def test_bittorrent_from_127_0_0_1_gets_nothing(node: Node, tmp_path: Path) -> None:
    port = free_port("127.0.0.1")
    ses = lt.session({"listen_interfaces": f"127.0.0.1:{port}", "outgoing_interfaces": "127.0.0.1",
                      "enable_dht": False, "enable_lsd": False, "enable_upnp": False,
                      "enable_natpmp": False, "enable_outgoing_utp": False,
                      "enable_incoming_utp": False, "alert_mask": lt.alert_category.error})
    log_before = len(node.daemon.logs())
    try:
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(str(node.lock))
        atp.save_path = str(tmp_path / "out")
        h = ses.add_torrent(atp)
        deadline = time.monotonic() + 20.0
        refused_at: float | None = None
        while time.monotonic() < deadline:
            st = h.status()
            if st.state not in (lt.torrent_status.checking_files,
                                lt.torrent_status.checking_resume_data):
                h.connect_peer(node.peer)
            assert st.total_payload_download == 0 and st.num_pieces == 0, "the stranger got data"
            new = node.daemon.logs()[log_before:]
            if refused_at is None and "peer blocked" in new and "127.0.0.1" in new:
                refused_at = time.monotonic()
            if refused_at is not None and time.monotonic() - refused_at >= 3:
                break
            time.sleep(0.5)
        st = h.status()
        assert st.total_payload_download == 0 and st.num_pieces == 0
        assert refused_at is not None, node.daemon.logs()[log_before:][-3000:]
    finally:
        del ses


def test_the_gateway_secret_stays_out_of_the_log_and_the_status(node: Node) -> None:
    assert not SECRET_URL.search(node.daemon.logs())
    assert not SECRET_URL.search(node.home.status_file.read_text())
    host, port = node.api
    with urllib.request.urlopen(f"http://{host}:{port}/status", timeout=5) as r:
        assert not SECRET_URL.search(r.read().decode())
