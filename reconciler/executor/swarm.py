"""One libtorrent session per node: add dataset versions, follow their progress, verify, move.

libtorrent is driven by polling its alert queue from the asyncio loop (no callbacks, no
threads of ours): `pump()` folds alerts into plain per-torrent state that the converger reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import libtorrent as lt
import structlog

log = structlog.get_logger("swarm")

ALERT_MASK = (lt.alert_category.status | lt.alert_category.error | lt.alert_category.peer
              | lt.alert_category.storage)


def split_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {value!r}")
    return host.strip("[]"), int(port)


def session_settings(listen_peer: str, download: int = 0, upload: int = 0) -> dict[str, object]:
    """Settings for a private, inventory-only swarm: no DHT, LSD, UPnP, NAT-PMP or trackers."""
    host, port = split_hostport(listen_peer)
    iface = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    s: dict[str, object] = {
        "listen_interfaces": iface,
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        # uTP connects hang on freshly started loopback sessions (notes/libtorrent.md §3): TCP.
        "enable_outgoing_utp": False, "enable_incoming_utp": False,
        "alert_mask": ALERT_MASK,
        "download_rate_limit": download, "upload_rate_limit": upload,
        # Rate limits must bind on a LAN too: the cluster is a LAN.
        "ignore_limits_on_local_network": False,
        # Peers are re-prioritised later (origin offload), keep connections to finished peers.
        "close_redundant_connections": False,
        "user_agent": "syncbit/0.1 libtorrent/" + lt.__version__,
    }
    if host not in ("0.0.0.0", "::"):
        s["outgoing_interfaces"] = host  # peers see our inventory address, not another one
    return s


@dataclass
class TorrentState:
    """What the alerts told us about one torrent since it was added."""

    handle: lt.torrent_handle
    total_bytes: int
    error: str | None = None
    url_seed_error: str | None = None
    checked: bool = False
    moved: bool | None = None  # None: no move asked or under way
    hash_failures: int = 0
    extra: dict[str, object] = field(default_factory=dict)


class Swarm:
    def __init__(self, listen_peer: str, download: int = 0, upload: int = 0) -> None:
        self.session = lt.session(session_settings(listen_peer, download, upload))
        self.torrents: dict[str, TorrentState] = {}  # key: v2 info-hash

    def listen_port(self) -> int:
        return self.session.listen_port()

    def add(self, info_hash: str, torrent: bytes, save_path: Path, url_seeds: list[str],
            total_bytes: int) -> TorrentState:
        if info_hash in self.torrents:
            return self.torrents[info_hash]
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(lt.bdecode(torrent))
        atp.save_path = str(save_path)
        atp.url_seeds = url_seeds
        atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
        h = self.session.add_torrent(atp)
        st = TorrentState(h, total_bytes)
        self.torrents[info_hash] = st
        return st

    def remove(self, info_hash: str) -> None:
        st = self.torrents.pop(info_hash, None)
        if st is not None:
            self.session.remove_torrent(st.handle)

    def pump(self) -> None:
        for a in self.session.pop_alerts():
            st = self._state_of(a)
            if isinstance(a, lt.torrent_checked_alert) and st:
                st.checked = True
            elif isinstance(a, lt.storage_moved_alert) and st:
                st.moved = True
            elif isinstance(a, lt.storage_moved_failed_alert) and st:
                st.moved = False
                st.error = f"moving to the store failed: {a.message()}"
            elif isinstance(a, (lt.torrent_error_alert, lt.file_error_alert)) and st:
                st.error = a.message()
                log.error("torrent error", info_hash=_ih(a), error=a.message())
            elif isinstance(a, lt.url_seed_alert) and st:
                st.url_seed_error = a.error_message() or a.message()
                log.warning("web seed error", info_hash=_ih(a), error=st.url_seed_error)
            elif isinstance(a, lt.hash_failed_alert) and st:
                st.hash_failures += 1
            elif isinstance(a, lt.listen_failed_alert):
                log.error("listen failed", error=a.message())

    def _state_of(self, a: lt.alert) -> TorrentState | None:
        h = getattr(a, "handle", None)
        if h is None:
            return None
        try:
            key = str(h.info_hashes().v2)
        except RuntimeError:
            return None
        return self.torrents.get(key)

    def status(self, info_hash: str) -> lt.torrent_status:
        return self.torrents[info_hash].handle.status()

    def recheck(self, info_hash: str) -> None:
        """Hash every piece on disk again (the Verifying phase)."""
        self.pump()  # drop a stale checked alert before asking for a new one
        st = self.torrents[info_hash]
        st.checked = False
        st.handle.force_recheck()

    def verified(self, info_hash: str) -> bool | None:
        """None while checking; then whether every piece hashed correctly."""
        st = self.torrents[info_hash]
        s = st.handle.status()
        if not st.checked or s.state in (lt.torrent_status.checking_files,
                                          lt.torrent_status.checking_resume_data):
            return None
        return s.is_seeding

    def move(self, info_hash: str, dst: Path) -> None:
        st = self.torrents[info_hash]
        st.moved = None
        dst.mkdir(parents=True, exist_ok=True)
        st.handle.move_storage(str(dst), lt.move_flags_t.always_replace_files)

    def close(self) -> None:
        for key in list(self.torrents):
            self.remove(key)
        del self.session


def _ih(a: lt.alert) -> str | None:
    h = getattr(a, "handle", None)
    try:
        return str(h.info_hashes().v2) if h is not None else None
    except RuntimeError:
        return None
