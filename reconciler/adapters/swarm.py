"""One libtorrent session per node: a private swarm among inventory nodes only.

libtorrent is driven by polling its alert queue from the asyncio loop (no callbacks, no
threads of ours): `pump()` folds alerts into plain per-torrent state that the executor reads.
"""

from __future__ import annotations

import ipaddress
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, cast

import libtorrent as lt
import structlog

from reconciler.adapters import atomic
from reconciler.adapters.gateway import NOT_THE_SHARE, SEED_URLS, seed_urls
from reconciler.core.hostport import join_hostport, parse_hostport

log = structlog.get_logger("swarm")

ALERT_MASK = (lt.alert_category.status | lt.alert_category.error | lt.alert_category.peer
              | lt.alert_category.storage | lt.alert_category.ip_block
              | lt.alert_category.file_progress)  # file_completed_alert: save resume data
RECONNECT_EVERY = 5.0  # seconds between attempts to (re)connect missing inventory peers
RECONNECT_FAST = 0.5  # ...during the first FAST_FOR seconds after the hash check, when peers
FAST_FOR = 10.0  # started at the same moment come up and origin shares are decided
#: Seconds after the gateway declined a web-seed request (outside the node's origin share)
#: before that torrent's web seed gets fresh URLs: the gateway's Retry-After.
RESEED_AFTER = 1.0
BLOCK_FINISHED = 3  # libtorrent's block_info state: written to disk (get_download_queue)

# Connection limits for the fleet (README "Fleet scale"; libtorrent's defaults, notes §10, are
# for one public torrent: 200 connections in all, 8 uploads at once, 30 new connections/s).
#: Per torrent: the overlay degree (core/offload.py DEGREE) twice over, for connections in
#: both directions while duplicates are being resolved.
MAX_PER_TORRENT = 16
#: In all: 256 datasets in the session (seeded or fetched; seeds stay connected too, because
#: close_redundant_connections is off) at the full overlay degree of 8; far below
#: LimitNOFILE=65536 (systemd/). Measured: the default 200 is short of 30 datasets x 7 peers
#: (8 nodes x 30 datasets: 1.07x origin and timeouts with it, 1.01-1.02x without; README).
CONNECTIONS_LIMIT = 2048
#: New outgoing connections per second: 30 spread a start with 30 datasets x 7 peers over 7 s.
CONNECTION_SPEED = 500


#: Kept importable from here (engine.executor uses it); core.hostport is the one parser.
split_hostport = parse_hostport


def session_settings(listen_peer: str, download: int = 0, upload: int = 0) -> lt.settings_pack:
    """Settings for a private, inventory-only swarm: no DHT, LSD, UPnP, NAT-PMP or trackers."""
    host, port = split_hostport(listen_peer)
    iface = join_hostport(host, port)
    # lt.settings_pack exists only in libtorrent's stubs (a TypedDict): at run time it is a dict.
    s: lt.settings_pack = {
        "listen_interfaces": iface,
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        # uTP connects hang on freshly started loopback sessions (notes/libtorrent.md §3): TCP.
        "enable_outgoing_utp": False, "enable_incoming_utp": False,
        "alert_mask": ALERT_MASK,
        "download_rate_limit": download, "upload_rate_limit": upload,
        # Rate limits must bind on a LAN too: the cluster is a LAN.
        "ignore_limits_on_local_network": False,
        # Piece priorities change during a download (origin offload): keep finished peers.
        "close_redundant_connections": False,
        # Several test nodes may share one address; real nodes have their own.
        "allow_multiple_connections_per_ip": True,
        # Inventory peers only, dialled every RECONNECT_EVERY by connect_peers: libtorrent's own
        # backoff (60 s x failures, given up after 3) kept a Draining node, dialled before the
        # new holder listened, from ever reaching it (issue 14, cordon). Retry each time.
        "min_reconnect_time": 1,
        "max_failcount": 1_000_000,
        # Web-seed requests as large as libtorrent makes them (16 MiB, never across a file
        # boundary): the gateway reads each through many origin connections, so a large request
        # is what keeps originConnections busy (bench/single_origin.py: 1 MiB requests and 2
        # URLs left the node at 0.3x aria2c's throughput). Pieces another node owns have
        # priority 0 (core/offload.py): libtorrent never puts them in a request.
        "urlseed_max_request_bytes": 16 << 20,
        # After any HTTP error libtorrent waits this long before it asks the web seed again
        # (it ignores Retry-After). The gateway declines (503) pieces outside this node's
        # origin share, which libtorrent asks for once its share is all requested; with 5 s a
        # node whose share then grew (runs taken over from a slower owner, core/offload.py)
        # sat idle 4.7 s after each decline (measured in tests/test_swarm.py). The web seed is
        # the local gateway, so asking it every second costs nothing.
        "urlseed_wait_retry": 1,
        # libtorrent connects to at most 3 web seeds per torrent by default: every one of our
        # URLs for a torrent (seed_urls) must get its connection.
        "max_web_seed_connections": SEED_URLS,
        # The web seed is our loopback gateway, which spreads requests over several origins
        # (source + mirrors): a piece failing its hash check means one origin sent bad bytes,
        # not that the gateway is bad. Banning it (the default) would stop the download; the
        # executor tells the gateway instead (TorrentState.failed_pieces), which skips that origin.
        "ban_web_seeds": False,
        "user_agent": "syncbit/0.1 libtorrent/" + lt.__version__,
        # Fleet scale (see MAX_PER_TORRENT): a node's peers are its overlay neighbours of
        # every dataset; uploads are not rationed among them (-1: every interested peer is
        # unchoked; choking is tit-for-tat for strangers, and there are none here).
        "connections_limit": CONNECTIONS_LIMIT,
        "connection_speed": CONNECTION_SPEED,
        "unchoke_slots_limit": -1,
    }
    if host not in ("0.0.0.0", "::"):
        s["outgoing_interfaces"] = host  # peers see our inventory address, not another one
    return s


def allow_list(addresses: Iterable[str]) -> lt.ip_filter:
    """Block every address but these (IPv4 and IPv6 are separate ranges in libtorrent)."""
    f = lt.ip_filter()
    f.add_rule("0.0.0.0", "255.255.255.255", 1)
    f.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1)
    for a in sorted(set(addresses)):
        try:
            ip = str(ipaddress.ip_address(a))
        except ValueError:  # a host name: libtorrent filters addresses, so it stays blocked
            continue
        f.add_rule(ip, ip, 0)
    return f


@dataclass
class PeerView:
    """What the connected BitTorrent peers of one torrent have (web seeds excluded)."""

    available: list[int]  # per piece: how many connected peers have it
    connected: dict[str, bool]  # peer ip -> is a seed
    interested: set[str] = field(default_factory=set)  # peer ips that want a piece we have
    have: dict[str, tuple[bool, ...]] = field(default_factory=dict)  # peer ip -> its bitfield


@dataclass
class TorrentState:
    """What the alerts told us about one torrent since it was added."""

    handle: lt.torrent_handle
    info_hash: str
    total_bytes: int
    num_pieces: int
    piece_size: int
    peers: dict[str, tuple[str, int]] = field(default_factory=dict)  # ip -> (ip, port)
    url: str | None = None  # the web seed URL, while enabled
    error: str | None = None
    url_seed_error: str | None = None
    seed_generation: int = 0  # of the web-seed URLs (gateway.seed_urls)
    #: The web-seed URLs given to libtorrent and not taken back (`Swarm._seed`): what turning
    #: the web seed off removes, whatever generation each was added under.
    seeded: tuple[str, ...] = ()
    reseed_at: float | None = None  # monotonic time to replace the web-seed URLs (pump)
    checked: bool = False
    moved: bool | None = None  # None: no move asked or under way
    failed_pieces: list[int] = field(default_factory=list)  # hash_failed_alert, unhandled
    last_connect: float = 0.0
    jitter: float = 1.0  # this round's factor on the reconnect interval
    checked_at: float | None = None
    priorities: tuple[int, ...] | None = None
    resume: bytes | None = None  # resume data from the last save request
    download_limit: int = 0  # per-torrent, bytes/s (0: none)
    seeded_at: float = 0.0  # monotonic time `Swarm._seed` last gave the web-seed URLs


class Swarm:
    def __init__(self, listen_peer: str, download: int = 0, upload: int = 0,
                 resume_dir: Path | None = None) -> None:
        self.session = lt.session(session_settings(listen_peer, download, upload))
        self.torrents: dict[str, TorrentState] = {}  # key: v2 info-hash
        self.resume_dir = resume_dir
        self.resume_due = False  # a file completed: save resume data soon
        #: Resume data is only as fresh as its last save: after a crash, pieces verified
        #: since then would be fetched again. So it is used after a clean stop only; after a
        #: crash libtorrent hashes what is on disk and keeps every good piece.
        self.trust_resume = True
        #: Applied to every alert text kept or logged: web-seed URLs carry the gateway's
        #: secret (the executor sets Gateway.redact here).
        self.redact: Callable[[str], str] = lambda text: text
        #: Web-seed URLs per torrent (gateway.seed_urls): libtorrent opens one connection per
        #: URL and has one request answered at a time on it.
        self.url_seeds = SEED_URLS

    def set_allowed(self, addresses: Iterable[str]) -> None:
        """Inbound and outbound: libtorrent applies the ip_filter to incoming peers, to the
        peers it dials AND to web seeds (notes/libtorrent.md §6; a torrent cleared of
        torrent_flags.apply_ip_filter would switch the check off for every incoming
        connection of the session), so the web-seed gateway's address must be listed."""
        self.session.set_ip_filter(allow_list(addresses))

    def set_rates(self, download: int, upload: int) -> None:
        self.session.apply_settings({"download_rate_limit": download, "upload_rate_limit": upload})

    def add(self, info_hash: str, torrent: bytes, save_path: Path, total_bytes: int,
            seed: bool = False) -> TorrentState:
        """Add a torrent; `seed` for a complete, verified version (no hash check on add:
        libtorrent's seed mode verifies each piece the first time a peer asks for it)."""
        if info_hash in self.torrents:
            return self.torrents[info_hash]
        # libtorrent's stubs type bdecode's result as any bencodable value; a torrent is a dict.
        ti = lt.torrent_info(cast("lt.TorrentFileDict", lt.bdecode(torrent)))
        atp = self._resume_params(info_hash, save_path) if not seed else None
        if atp is None:
            atp = lt.add_torrent_params()
        atp.ti = ti
        atp.save_path = str(save_path)
        atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
        atp.flags |= lt.torrent_flags.disable_pex | lt.torrent_flags.disable_dht \
            | lt.torrent_flags.disable_lsd
        if seed:
            atp.flags |= lt.torrent_flags.seed_mode
        atp.max_connections = MAX_PER_TORRENT
        h = self.session.add_torrent(atp)
        st = TorrentState(h, info_hash, total_bytes, ti.num_pieces(), ti.piece_length())
        self.torrents[info_hash] = st
        return st

    def _resume_params(self, info_hash: str, save_path: Path) -> lt.add_torrent_params | None:
        if self.resume_dir is None or not self.trust_resume:
            return None
        f = self.resume_dir / f"{info_hash}.resume"
        try:
            atp = lt.read_resume_data(f.read_bytes())
        except (OSError, RuntimeError):
            return None
        if Path(atp.save_path) != save_path:
            return None  # the data moved since: let libtorrent check what is there
        # A previous process's web seed: its gateway (address, port, secret) is gone.
        atp.url_seeds = []
        return atp

    def remove(self, info_hash: str) -> None:
        st = self.torrents.pop(info_hash, None)
        if st is not None:
            self.session.remove_torrent(st.handle)
        if self.resume_dir is not None:
            (self.resume_dir / f"{info_hash}.resume").unlink(missing_ok=True)

    # -- peers and the web seed ---------------------------------------------------------------

    def set_peers(self, info_hash: str, peers: Iterable[str]) -> None:
        st = self.torrents[info_hash]
        st.peers = {h: (h, p) for h, p in map(split_hostport, peers)}

    def connect_peers(self, now: float | None = None) -> None:
        """(Re)connect inventory peers that are not connected, every few seconds. Waits for
        the hash check: connecting before it loses the connection (research notes §3)."""
        now = time.monotonic() if now is None else now
        for st in self.torrents.values():
            if not st.checked or not st.peers:
                continue
            if st.checked_at is None:
                st.checked_at = now
            every = RECONNECT_FAST if now - st.checked_at < FAST_FOR else RECONNECT_EVERY
            if now - st.last_connect < every * st.jitter:
                continue
            # Jittered: two nodes started together must not keep dialling each other in lock
            # step (simultaneous connections can drop each other as duplicates).
            st.last_connect, st.jitter = now, random.uniform(0.6, 1.4)
            connected = {p.ip[0] for p in st.handle.get_peer_info()
                         if p.connection_type == lt.peer_info.standard_bittorrent}
            for ip, addr in st.peers.items():
                if ip not in connected:
                    try:
                        st.handle.connect_peer(addr)
                    except RuntimeError as e:  # e.g. torrent being removed
                        log.debug("connect failed", peer=f"{ip}:{addr[1]}", error=str(e))

    def web_seed(self, info_hash: str, url: str | None) -> None:
        """Turn the origin (through the gateway) on for this torrent, or off with None."""
        st = self.torrents[info_hash]
        if st.url == url:
            if url is not None:
                self._nudge_web_seed(st)
            return
        st.url = url
        self._seed(st)

    def _seed(self, st: TorrentState, generation: int | None = None) -> None:
        """The one way web-seed URLs reach libtorrent: take back every URL given so far (all
        generations), then give `st.url`'s URLs of `generation` (default: the current one),
        or none when the web seed is off. A URL removed and added again is a fresh web seed
        to libtorrent (new connection, nothing remembered of the old one)."""
        for u in st.seeded:
            st.handle.remove_url_seed(u)
        st.seeded = ()
        if generation is not None:
            st.seed_generation = generation
        if st.url is not None:
            st.seeded = tuple(seed_urls(st.url, self.url_seeds, st.seed_generation))
            for u in st.seeded:
                st.handle.add_url_seed(u)
            st.seeded_at = time.monotonic()

    def _nudge_web_seed(self, st: TorrentState) -> None:
        """Reconnect the web seed when libtorrent left it connected but not interesting while
        this node has origin pieces to fetch. Seen after the gateway declined a request (503,
        a piece outside the share) and the share then grew (runs taken over, the stuck
        fallback): libtorrent's web-seed connections stayed up, uninterested, with pieces of
        priority 7 missing, and asked for nothing more (tests/test_swarm.py, 60 s and more).
        Same generation: fresh URLs are for a decline (`_reseed`). At most once a second
        after the URLs were last given, by either: connections just dropped or just made are
        listed idle for a moment (seen right after `_reseed`), which is no stuck web seed."""
        now = time.monotonic()
        if now - st.seeded_at < 1.0:
            return
        web = [p for p in st.handle.get_peer_info() if p.connection_type == lt.peer_info.web_seed
               and not p.flags & (lt.peer_info.handshake | lt.peer_info.connecting)]
        if not web or any(p.flags & lt.peer_info.interesting or p.download_queue_length
                          for p in web):
            return
        log.info("web seed reconnected", info_hash=st.info_hash)
        self._seed(st)

    def skip_files(self, info_hash: str, keep: Collection[str]) -> None:
        """File priority 0 for every file whose path (below the torrent's top directory) is
        not in `keep`: a split version (core/split.py). libtorrent then neither downloads
        nor creates them; the executor's piece priorities keep their pieces at 0 too."""
        st = self.torrents[info_hash]
        fs = _file_storage(st)
        prios = []
        for i in range(fs.num_files()):
            pad = bool(fs.file_flags(i) & lt.file_storage.flag_pad_file)
            prios.append(4 if pad or _rel(fs.file_path(i)) in keep else 0)
        st.handle.prioritize_files(prios)

    def stranded(self, info_hash: str) -> tuple[int, ...]:
        """Pieces in libtorrent's download queue with every block written (`finished`): ones
        it has neither passed nor failed once nothing has been verified for a while
        (core.transfer.recheck_stranded)."""
        out = []
        for q in self.torrents[info_hash].handle.get_download_queue():
            blocks = q["blocks"]
            if blocks and all(b["state"] == BLOCK_FINISHED for b in blocks):
                out.append(int(q["piece_index"]))
        return tuple(out)

    def lock_files(self, info_hash: str) -> list[tuple[str, int]]:
        """The torrent's files as its lock lists them: (path below the top directory,
        size), pad files left out."""
        fs = _file_storage(self.torrents[info_hash])
        return [(_rel(fs.file_path(i)), fs.file_size(i)) for i in range(fs.num_files())
                if not fs.file_flags(i) & lt.file_storage.flag_pad_file]

    def prioritize(self, info_hash: str, priorities: tuple[int, ...]) -> None:
        st = self.torrents[info_hash]
        if st.priorities != priorities:
            st.handle.prioritize_pieces(list(priorities))
            st.priorities = priorities

    def pause(self, info_hash: str) -> None:
        """Stop fetching (torrent not auto-managed: it stays paused until `resume`); the
        torrent stays in the session with its verified pieces."""
        st = self.torrents[info_hash]
        self.web_seed(info_hash, None)
        st.handle.pause()

    def resume(self, info_hash: str) -> None:
        self.torrents[info_hash].handle.resume()

    def _reseed(self, st: TorrentState) -> None:
        """The web seed under URLs libtorrent has not seen: a fresh start for it."""
        st.reseed_at = None
        if st.url is not None:
            self._seed(st, st.seed_generation + 1)

    def set_download_limit(self, info_hash: str, limit: int) -> None:
        """Per-torrent download limit in bytes/s (0: none), under the session's own."""
        st = self.torrents[info_hash]
        if st.download_limit != limit:
            st.handle.set_download_limit(limit if limit > 0 else -1)
            st.download_limit = limit

    def peer_view(self, info_hash: str) -> PeerView:
        st = self.torrents[info_hash]
        available = [0] * st.num_pieces
        connected: dict[str, bool] = {}
        have: dict[str, tuple[bool, ...]] = {}
        interested: set[str] = set()
        for p in st.handle.get_peer_info():
            if p.connection_type == lt.peer_info.web_seed:
                continue
            if p.flags & lt.peer_info.handshake or p.flags & lt.peer_info.connecting:
                continue
            ip = p.ip[0]
            connected[ip] = bool(p.flags & lt.peer_info.seed)
            bits = tuple(bool(x) for x in p.pieces[:st.num_pieces])
            if len(bits) == st.num_pieces:
                have[ip] = tuple(h or o for h, o in zip(bits, have.get(ip, bits)))
            if p.flags & lt.peer_info.remote_interested:
                interested.add(ip)
            for i, has in enumerate(bits):
                if has:
                    available[i] += 1
        return PeerView(available, connected, interested, have)

    # -- alerts -------------------------------------------------------------------------------

    def pump(self) -> None:
        for a in self.session.pop_alerts():
            st = self._state_of(a)
            if isinstance(a, lt.torrent_checked_alert) and st:
                st.checked = True
            elif isinstance(a, lt.storage_moved_alert) and st:
                st.moved = True
            elif isinstance(a, lt.storage_moved_failed_alert) and st:
                st.moved = False
                st.error = f"moving to the store failed: {self.redact(a.message())}"
            elif isinstance(a, (lt.torrent_error_alert, lt.file_error_alert)) and st:
                # The first error is the cause: a write that failed for lack of space is
                # followed by hash errors about the data it could not write.
                st.error = st.error or self.redact(a.message())
                log.error("torrent error", info_hash=st.info_hash, error=st.error)
            elif isinstance(a, lt.url_seed_alert) and st:
                message = a.error_message() or a.message()
                if NOT_THE_SHARE not in message:  # the gateway declined: not an origin error
                    st.url_seed_error = self.redact(message)
                elif st.reseed_at is None:
                    # libtorrent takes any error status as "this URL lacks the file" and never
                    # asks it for that file again (web_peer_connection.cpp: have_files), so a
                    # node's own pieces of that file would wait for STUCK_AFTER (measured: 1-4
                    # datasets in 30, 20 s each). Fresh URLs after the Retry-After.
                    st.reseed_at = time.monotonic() + RESEED_AFTER
            elif isinstance(a, lt.hash_failed_alert) and st:
                st.failed_pieces.append(int(a.piece_index))
            elif isinstance(a, lt.file_completed_alert) and st:
                self.resume_due = True
            elif isinstance(a, lt.save_resume_data_alert) and st:
                st.resume = lt.write_resume_data_buf(a.params)
            elif isinstance(a, (lt.peer_disconnected_alert, lt.peer_error_alert)) and st:
                log.debug("peer disconnected", info_hash=st.info_hash, peer=_endpoint(a),
                          reason=self.redact(a.message()))
            elif isinstance(a, lt.peer_connect_alert) and st:
                log.debug("peer connecting", info_hash=st.info_hash, peer=_endpoint(a))
            elif isinstance(a, lt.peer_blocked_alert):
                log.warning("peer blocked", peer=self.redact(a.message()))
            elif isinstance(a, lt.listen_failed_alert):
                log.error("listen failed", error=self.redact(a.message()))
        now = time.monotonic()
        for st in self.torrents.values():
            if st.reseed_at is not None and now >= st.reseed_at:
                self._reseed(st)

    def _state_of(self, a: lt.alert) -> TorrentState | None:
        h = getattr(a, "handle", None)
        if h is None:
            return None
        try:
            key = str(h.info_hashes().v2)
        except RuntimeError:
            return None
        return self.torrents.get(key)

    # -- storage ------------------------------------------------------------------------------

    def move(self, info_hash: str, dst: Path) -> None:
        st = self.torrents[info_hash]
        st.moved = None
        dst.mkdir(parents=True, exist_ok=True)
        st.handle.move_storage(str(dst), lt.move_flags_t.always_replace_files)

    def force_recheck(self, info_hash: str) -> None:
        st = self.torrents[info_hash]
        st.checked = False
        st.handle.force_recheck()

    async def save_resume_data(self, timeout: float = 10.0) -> int:
        """Ask every unfinished torrent for resume data and write what arrives in `timeout`."""
        import asyncio

        if self.resume_dir is None:
            return 0
        waiting = {ih: st for ih, st in self.torrents.items()
                   if not st.handle.status().is_seeding}
        for st in waiting.values():
            st.resume = None
            st.handle.save_resume_data(lt.torrent_handle.save_info_dict)
        deadline = time.monotonic() + timeout
        while any(st.resume is None for st in waiting.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            self.pump()
        saved = 0
        for ih, st in waiting.items():
            if st.resume is None:  # not answered in time: an older file would be stale
                (self.resume_dir / f"{ih}.resume").unlink(missing_ok=True)
                continue
            try:
                atomic.write_bytes(self.resume_dir / f"{ih}.resume", st.resume)
            except OSError as e:  # a full disk: the next start hashes what is there
                log.error("cannot save resume data", info_hash=ih, error=str(e))
                continue
            saved += 1
        return saved

    def close(self) -> None:
        for key in list(self.torrents):
            st = self.torrents.pop(key)
            self.session.remove_torrent(st.handle)
        del self.session


def _file_storage(st: TorrentState) -> lt.file_storage:
    ti = st.handle.torrent_file()
    if ti is None:  # never for a torrent added from its .torrent bytes
        raise RuntimeError(f"{st.info_hash}: no metadata")
    return ti.files()


def _rel(path: str) -> str:
    """A file's path below the torrent's top directory, `/`-separated."""
    return path.replace("\\", "/").split("/", 1)[-1]


def _endpoint(a: lt.alert) -> str:
    # Alerts differ: some have `endpoint`, some `ip`, some neither; what is not an (ip, port)
    # pair is shown with str().
    ep: Any = getattr(a, "endpoint", None) or getattr(a, "ip", None)
    try:
        return f"{ep[0]}:{ep[1]}"
    except (TypeError, IndexError):
        return str(ep)
