"""The cluster as one node sees it: every inventory node's `/status`, fetched concurrently with
timeouts and caps (`status --cluster` and the API's `/cluster` and `/` page), and the
cluster-wide numbers derived from them (readiness per dataset, origin amplification, what is
under-replicated).

What it fetches is fixed by the desired state, never by a request: the `spec.api` address of
each Node document, path `/status`. So the API's `/cluster` cannot be pointed anywhere else
(no SSRF), and `CachedCluster` bounds how often it fans out however many clients ask.
"""

from __future__ import annotations

import asyncio
import errno
import json
import time
from typing import Mapping

import aiohttp

from reconciler.core.placement import place
from reconciler.core.placement_warnings import placement_warnings
from reconciler.core.split import short_files, split_files
from reconciler.model.desired import Dataset, DesiredState

MAX_PARALLEL = 64  # requests in flight at once; each one's timeout starts when it is sent
MAX_BODY = 8 << 20  # bytes of one node's /status read at most
FETCH_TIMEOUT = 3.0  # s for one node's answer
CACHE_FOR = 2.0  # s an aggregated answer is reused: one fan-out per interval, whoever asks


async def fetch_cluster(state: DesiredState, timeout: float = 3.0,
                        local: Mapping[str, dict] | None = None) -> dict[str, dict]:
    """GET http://<spec.api>/status of every Node in the inventory concurrently; per node either
    {"status": <doc>} or {"error": "<reason: connection refused / timeout / HTTP 503 ...>"}.
    Only the inventory's own `spec.api` addresses are asked, only for `/status`, without
    redirects or proxies, each answer read up to MAX_BODY bytes. `local`: answers already known
    (the asking node's own document), not fetched."""
    sem = asyncio.Semaphore(MAX_PARALLEL)
    # trust_env=False: cluster addresses never go through an HTTP proxy from the environment.
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        async def one(name: str, api: str) -> dict:
            async with sem:
                return await _fetch_one(session, name, api, timeout)

        known = dict(local or {})
        names = sorted(n for n in state.nodes if n not in known)
        results = await asyncio.gather(*(one(n, state.nodes[n].api) for n in names))
    return dict(sorted({**dict(zip(names, results)), **known}.items()))


async def _fetch_one(session: aiohttp.ClientSession, name: str, api: str, timeout: float) -> dict:
    url = f"http://{api}/status"
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout),
                               allow_redirects=False) as resp:
            body = await resp.content.read(MAX_BODY + 1)
            if len(body) > MAX_BODY:
                return {"error": f"invalid response: larger than {MAX_BODY} bytes"}
            if resp.status != 200:
                return {"error": f"HTTP {resp.status}" + _error_detail(body)}
            try:
                doc = json.loads(body)
            except ValueError:
                return {"error": "invalid response: not JSON"}
    except TimeoutError:  # asyncio's and aiohttp's timeouts are TimeoutError
        return {"error": f"timeout after {timeout:g}s"}
    except aiohttp.ClientConnectorError as e:
        return {"error": _connect_error(e)}
    except aiohttp.InvalidURL:
        return {"error": f"invalid spec.api address {api!r}"}
    except (aiohttp.ClientError, OSError) as e:
        return {"error": f"{type(e).__name__}: {e}".rstrip(": ")}
    if not isinstance(doc, dict) or doc.get("kind") != "NodeStatus":
        return {"error": "invalid response: not a NodeStatus document"}
    if doc.get("node") != name:
        return {"error": f"wrong node: the API at {api} answers as {doc.get('node')!r}"}
    return {"status": doc}


ERROR_DETAIL_MAX = 200  # characters of another API's `{"error": ...}` passed on


def _error_detail(body: bytes) -> str:
    """The `error` of a syncbit API's JSON answer, shortened: whatever answers at a `spec.api`
    address, only this much of its body is ever passed on."""
    try:
        doc = json.loads(body)
    except ValueError:
        return ""
    msg = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(msg, str) or not msg:
        return ""
    msg = " ".join(msg.split())
    return ": " + (msg if len(msg) <= ERROR_DETAIL_MAX else msg[:ERROR_DETAIL_MAX] + "...")


def _connect_error(e: aiohttp.ClientConnectorError) -> str:
    code = e.os_error.errno if e.os_error is not None else None
    if code == errno.ECONNREFUSED:
        return "connection refused"
    if code == errno.EHOSTUNREACH:
        return "no route to host"
    if code == errno.ENETUNREACH:
        return "network unreachable"
    if isinstance(e.os_error, OSError) and e.os_error.strerror:
        return e.os_error.strerror.lower()
    return str(e.os_error or e)




def _num(v: object) -> int:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0


def summarize(results: Mapping[str, dict], state: DesiredState) -> dict[str, object]:
    """Per dataset: where it is placed, how many of those nodes have it Ready, bytes from
    origin vs from peers summed over the nodes that answered, and the origin amplification
    (origin bytes / one copy's bytes: 1.0 is each byte fetched once for the whole cluster);
    the same totals over every dataset; the datasets under-replicated (placed on a node that
    does not have it Ready, or placed on fewer nodes than asked)."""
    assignments = place(state)
    warned: dict[str, list[str]] = {}
    for w in placement_warnings(state):
        warned.setdefault(w.dataset, []).append(f"{w.field}: {w.message}")
    names = sorted(set(state.datasets) | {
        ds for r in results.values() if isinstance(r.get("status"), dict)
        for ds in (r["status"].get("datasets") or {})})
    datasets: dict[str, dict[str, object]] = {}
    tot_origin = tot_peers = tot_size = 0
    for name in names:
        a = assignments.get(name)
        placed = sorted(a.nodes) if a is not None else []
        d = state.datasets.get(name)
        origin = peers = size = ready = 0
        ready_on: list[str] = []
        for node, r in results.items():
            doc = r.get("status")
            entry = (doc.get("datasets") or {}).get(name) if isinstance(doc, dict) else None
            if not isinstance(entry, dict):
                continue
            if d is not None and entry.get("version") not in (None, d.version):
                continue  # an older version still held: its bytes are not this one's
            origin += _num(entry.get("bytesFromOrigin"))
            peers += _num(entry.get("bytesFromPeers"))
            size = max(size, _num(entry.get("bytesTotal")))
            if node in placed and entry.get("phase") == "Ready":
                ready += 1
                ready_on.append(node)
        if d is not None and d.lock is not None and (size == 0 or d.split is not None):
            size = d.lock.total_bytes  # Pending everywhere, or split: one copy is the lock's
        wanted = a.wanted if a is not None else 0
        datasets[name] = {
            "version": d.version if d is not None else None, "declared": d is not None,
            "placed": placed, "wanted": wanted, "ready": ready, "bytesTotal": size,
            "bytesFromOrigin": origin, "bytesFromPeers": peers,
            "originAmplification": round(origin / size, 3) if size else None,
            "underReplicated": d is not None and (ready < len(placed) or len(placed) < wanted),
            "shortfall": a.shortfall_reason if a is not None else None,
            "placementWarnings": warned.get(name, []),
            "split": split_summary(d, placed, ready_on)}
        if d is not None:
            tot_origin, tot_peers, tot_size = tot_origin + origin, tot_peers + peers, tot_size + size
    return {"datasets": datasets,
            "totals": {"bytesTotal": tot_size, "bytesFromOrigin": tot_origin,
                       "bytesFromPeers": tot_peers,
                       "originAmplification": (round(tot_origin / tot_size, 3)
                                               if tot_size else None)},
            "underReplicated": sorted(n for n, v in datasets.items() if v["underReplicated"]),
            "placementUnsatisfiable": sorted(n for n in warned if n in datasets)}


def split_summary(d: Dataset | None, placed: list[str], ready_on: list[str]
                   ) -> dict[str, int] | None:
    """`spec.split`: the files, and how many have fewer than `copies` copies on nodes where
    this version is Ready (all of them while the lock is not in git: files unknown, 0)."""
    if d is None or d.split is None:
        return None
    files = [p for p, _ in d.lock.files] if d.lock is not None else []
    held = split_files(d.name, files, placed, d.split)
    return {"copies": d.split, "files": len(files),
            "filesShort": len(short_files(held, ready_on, d.split))}


class CachedCluster:
    """`/cluster` for the API: the aggregated view, fanned out at most once per `cache_for`
    seconds (concurrent requests share the one in flight), so clients of the API cannot turn
    it into a traffic amplifier towards the other nodes."""

    def __init__(self, timeout: float = FETCH_TIMEOUT, cache_for: float = CACHE_FOR) -> None:
        self.timeout = timeout
        self.cache_for = cache_for
        self._at: float | None = None
        self._key: object = None
        self._value: dict[str, object] | None = None
        self._inflight: asyncio.Future[dict[str, object]] | None = None

    async def get(self, state: DesiredState, own: dict | None) -> dict[str, object]:
        key = (state.revision, own.get("node") if own else None)
        now = time.monotonic()
        if (self._value is not None and self._key == key and self._at is not None
                and now - self._at < self.cache_for):
            return self._value
        if self._inflight is not None and self._key == key:
            return await asyncio.shield(self._inflight)
        self._key = key
        fut: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        self._inflight = fut
        try:
            local = {own["node"]: {"status": own}} if own and own.get("node") in state.nodes \
                else {}
            results = await fetch_cluster(state, self.timeout, local)
            value = {"revision": state.revision,
                     "nodes": {n: {"api": state.nodes[n].api if n in state.nodes else None,
                                   "status": r.get("status"), "error": r.get("error")}
                               for n, r in results.items()},
                     **summarize(results, state)}
            self._value, self._at = value, time.monotonic()
            fut.set_result(value)
            return value
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            self._inflight = None
