"""`hf` sources: a Hugging Face Hub repository (model, dataset or space) at one commit.

Metadata goes through the real `huggingface_hub` client (`HfApi`, run in a thread): the
revision (default `main`) is resolved to a commit sha with `repo_info`, the files and sizes at
that commit come from `list_repo_tree(recursive=True)`, and `include`/`exclude` are applied with
`huggingface_hub.utils.filter_repo_objects`, i.e. exactly the library's `allow_patterns` /
`ignore_patterns` semantics (fnmatch, `*` crosses `/`). Bytes are streamed with the shared
aiohttp session from `{endpoint}/{datasets/|spaces/}{repo}/resolve/{commit}/{path}`. The Hub
redirects large files to a CDN with a signed URL: that location is kept for a few minutes
(`LOCATION_SECONDS`) and a file's next ranges are read there directly, so many concurrent range
reads of a file (`read_parallel`, the web-seed gateway) ask the Hub once, not once per range
(the Hub rate-limits `resolve`).

Pinning. Every byte is read by commit sha, never by branch name, so a push to the branch cannot
change what is read. The commit is, in order of precedence:
  1. `pinned_commit` given to the constructor: what the lock recorded
     (`lock_extra(torrent)["syncbit"]["source"]["commit"]`, i.e. this module's `describe()`).
     The web-seed gateway must pass it: it reads ranges of the locked torrent, and only the
     locked commit has those bytes;
  2. the commit `list_files()` resolved (what `lock` then records through `describe()`);
  3. otherwise `read()` resolves `revision` once and keeps it for the life of the object.
`HfOrigin.commit` is the commit in use (None until known).

Credentials. The token is `HF_TOKEN` only (no fallback to a token saved by `hf auth login`, so
metadata and byte reads always use the same credential). It is sent as `Authorization: Bearer`
to the endpoint's own origin only: byte reads follow redirects hop by hop (`redirects.request`,
at most 5, never https -> http) and the header is dropped as soon as a redirect leaves the
endpoint's scheme/host/port (the Hub redirects LFS/Xet files to a CDN with a signed URL).
Metadata calls go through huggingface_hub's httpx2 client (`follow_redirects=True`), which drops
`Authorization` on a redirect to another origin except a same-host http->https upgrade
(httpx2 `Client._redirect_headers`); the token is the only credential it sends. It never
appears in `describe()`, `revision`, or any error.
The endpoint is `HF_ENDPOINT`, else the public Hub.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Mapping

import aiohttp
from yarl import URL

from reconciler.model.desired import HfSource
from reconciler.adapters.sources.base import CHUNK, Origin, OriginError, OriginFile, range_header, safe_url
from reconciler.adapters.sources.blocking_get import PlainGet, StatusError
from reconciler.adapters.sources.redirects import request
from reconciler.adapters.sources.threaded import NotRanged, Reading

if TYPE_CHECKING:  # pragma: no cover
    from reconciler.adapters.sources import OriginContext

#: How long the CDN location the Hub redirected a file to is read without asking the Hub again
#: (the Hub signs them for an hour or more; one refused is asked again at once).
LOCATION_SECONDS = 300.0
MAX_LOCATIONS = 10_000  # kept per origin (files of the version); all dropped past that

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_REVISION = "main"
_SHA = re.compile(r"^[0-9a-f]{40}$")


def _hub() -> Any:
    """`huggingface_hub`, imported on first use (it is slow to import, and only hf sources need
    it). Its telemetry is off unless the operator turned it on: the library would otherwise
    fetch `{endpoint}/api/agent-harnesses` from every node; the variable is read at import."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import huggingface_hub
    import huggingface_hub.errors
    import huggingface_hub.hf_api
    import huggingface_hub.utils
    return huggingface_hub


def open_hf(source: HfSource, ctx: "OriginContext",
            pinned: Mapping[str, object] | None = None) -> "HfOrigin":
    """The `_FACTORIES` entry: `pinned` is the lock's recorded source (`describe()` of the origin
    that wrote it), whose `commit` pins every read; None when no lock is known."""
    commit = None
    if pinned:
        if pinned.get("type") != "hf" or pinned.get("repo") != source.repo or \
                pinned.get("repoType", "model") != source.repo_type:
            raise OriginError(
                f"hf source {_name(source)}: the lock was written from another source "
                f"({pinned.get('type')} {pinned.get('repoType', '')} {pinned.get('repo', '')}); "
                "run `syncbit-reconcile lock` again")
        c = pinned.get("commit")
        if not isinstance(c, str) or not _SHA.match(c):
            raise OriginError(f"hf source {_name(source)}: the lock records no commit sha; "
                              "run `syncbit-reconcile lock` again")
        commit = c
    return HfOrigin(source, ctx.http, pinned_commit=commit)


def _name(source: HfSource) -> str:
    return f"{source.repo_type} {source.repo}"


class HfOrigin(Origin):
    kind = "hf"

    def __init__(self, source: HfSource, http: aiohttp.ClientSession, *,
                 pinned_commit: str | None = None, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.source = source
        self.http = http
        self.endpoint = (env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        self._token = env.get("HF_TOKEN") or None
        self.revision = source.revision or DEFAULT_REVISION
        if pinned_commit is not None and not _SHA.match(pinned_commit):
            raise OriginError(f"{self._what()}: pinned commit {pinned_commit!r} is not a sha")
        self.commit: str | None = pinned_commit
        self._resolving = asyncio.Lock()
        # `resolve` URL -> (the CDN location the Hub redirected it to, used until then).
        self._located: dict[str, tuple[URL, float]] = {}
        self._locating: dict[str, asyncio.Future[None]] = {}  # answered when the Hub answers
        self._hub_served: set[str] = set()  # `resolve` URLs the Hub answered itself

    # -- metadata (huggingface_hub, in a thread) ------------------------------------------------

    def _what(self) -> str:
        """How messages name this origin: type, repo, revision (and commit once known)."""
        s = f"hf source {_name(self.source)} (revision {self.revision}"
        if self.commit and self.commit != self.revision:
            s += f", commit {self.commit[:12]}"
        return s + ")"

    def _api(self) -> Any:
        HfApi = _hub().HfApi
        # token=False, not None: None would make the library fall back to a saved login token
        # that `read()` does not know about.
        return HfApi(endpoint=self.endpoint, token=self._token or False,
                     library_name="syncbit")

    async def _resolve(self) -> str:
        """The commit sha of `revision`, asked once per origin object."""
        if self.commit is not None:
            return self.commit
        async with self._resolving:
            if self.commit is None:
                if _SHA.match(self.revision):
                    self.commit = self.revision
                else:
                    info = await self._call(lambda api: api.repo_info(
                        self.source.repo, repo_type=self.source.repo_type,
                        revision=self.revision))
                    sha = getattr(info, "sha", None)
                    if not isinstance(sha, str) or not _SHA.match(sha):
                        raise OriginError(f"{self._what()}: the endpoint returned no commit sha")
                    self.commit = sha
        return self.commit

    async def _call(self, fn: Any) -> Any:
        def run() -> Any:
            return fn(self._api())
        try:
            return await asyncio.to_thread(run)
        except OriginError:
            raise
        except Exception as e:  # noqa: BLE001 - every failure becomes a message naming the repo
            raise OriginError(self._scrub(self._explain(e))) from None

    def _explain(self, e: Exception) -> str:
        errors = _hub().errors

        def cls(name: str) -> Any:  # names differ across huggingface_hub versions
            return getattr(errors, name, ())

        what = self._what()
        if isinstance(e, cls("GatedRepoError")):
            return (f"{what}: gated repository; "
                    + ("HF_TOKEN is not set" if not self._token else
                       "the HF_TOKEN account has not been granted access"))
        if isinstance(e, cls("RepositoryNotFoundError")):
            return (f"{what}: repository not found" + (
                " (or it is private/gated: HF_TOKEN is not set)" if not self._token else
                " (or HF_TOKEN has no access to it)"))
        if isinstance(e, cls("RevisionNotFoundError")):
            return f"{what}: revision {self.revision} not found"
        if isinstance(e, (cls("RemoteEntryNotFoundError"), cls("EntryNotFoundError"))):
            return f"{what}: path not found"
        if isinstance(e, cls("OfflineModeIsEnabled")):
            return f"{what}: HF_HUB_OFFLINE is set, the Hub cannot be reached"
        if isinstance(e, cls("HfHubHTTPError")):
            response = getattr(e, "response", None)
            status = getattr(response, "status_code", None)
            server = getattr(e, "server_message", None) or ""
            if status == 401:
                return (f"{what}: HF_TOKEN was rejected (401 {server or 'unauthorized'})"
                        if self._token else f"{what}: authentication required, HF_TOKEN is not set")
            if status == 403:
                return f"{what}: access denied (403{': ' + server if server else ''})"
            return f"{what}: the Hub answered {status}{': ' + server if server else ''}"
        if isinstance(e, ValueError):  # e.g. huggingface_hub's HFValidationError: a bad repo id
            return f"{what}: {e}"
        return f"{what}: cannot reach {safe_url(self.endpoint)}: {e.__class__.__name__}: {e}"

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    async def list_files(self) -> list[OriginFile]:
        hub = _hub()
        RepoFile, filter_repo_objects = hub.hf_api.RepoFile, hub.utils.filter_repo_objects

        commit = await self._resolve()
        entries = await self._call(lambda api: list(api.list_repo_tree(
            self.source.repo, repo_type=self.source.repo_type, revision=commit,
            recursive=True)))
        files = [e for e in entries if isinstance(e, RepoFile)]
        keep = filter_repo_objects(files, allow_patterns=list(self.source.include) or None,
                                   ignore_patterns=list(self.source.exclude) or None,
                                   key=lambda f: f.path)
        out = []
        for f in sorted(keep, key=lambda f: f.path):
            rev: dict[str, object] = {"commit": commit, "size": f.size, "blobId": f.blob_id}
            if f.lfs is not None:
                rev["sha256"] = f.lfs.sha256
            if getattr(f, "xet_hash", None):
                rev["xetHash"] = f.xet_hash
            out.append(OriginFile(f.path, f.size, rev))
        return out

    # -- bytes (aiohttp) ------------------------------------------------------------------------

    def url(self, path: str, commit: str) -> str:
        """`{endpoint}/{datasets/|spaces/}{repo}/resolve/{commit}/{path}`, quoted as the library
        quotes it."""
        return _hub().hf_hub_url(self.source.repo, path, repo_type=self.source.repo_type,
                                 revision=commit, endpoint=self.endpoint)

    async def read(self, path: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        commit = await self._resolve()
        if length == 0:
            return
        try:
            url = self.url(path, commit)
        except ValueError as e:  # huggingface_hub's HFValidationError: a bad repo id
            raise OriginError(f"{self._what()}: {e}") from None
        rng = range_header(offset, length)
        ranged = rng is not None
        headers = self._byte_headers(rng)
        try:
            r = await self._get(URL(url, encoded=True), headers)
        except aiohttp.ClientError as e:
            raise OriginError(self._scrub(f"{self._what()}: {path}: cannot reach "
                                          f"{safe_url(self.endpoint)}: {e.__class__.__name__}: {e}")) from None
        try:
            if r.status >= 400:
                raise OriginError(self._scrub(self._http_error(r, path, headers.get("Range"))))
            if ranged and r.status != 206:
                raise OriginError(f"{self._what()}: {path}: the server ignored the Range request "
                                  f"(status {r.status})")
            enc = r.headers.get("Content-Encoding", "identity").lower()
            if enc != "identity":
                raise OriginError(f"{self._what()}: {path}: unexpected Content-Encoding {enc}")
            try:
                async for chunk in r.content.iter_chunked(CHUNK):
                    yield chunk
            except aiohttp.ClientError as e:
                raise OriginError(f"{self._what()}: {path}: {e.__class__.__name__}: "
                                  f"{self._scrub(str(e))}") from None
        finally:
            r.release()

    def _byte_headers(self, rng: str | None) -> dict[str, str]:
        """The headers of a byte read through the Hub: the token (for the endpoint's origin
        only, see `_get`), and `Range` if given."""
        headers = {"Accept-Encoding": "identity", "User-Agent": "syncbit"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if rng is not None:
            headers["Range"] = rng
        return headers

    async def _get(self, url: URL, headers: Mapping[str, str]) -> aiohttp.ClientResponse:
        """GET the file at `url` (its `resolve` URL): straight from the CDN location the Hub
        redirected it to lately, else through the Hub, keeping the location it gives.

        Authorization goes to the endpoint's origin only (`redirects.request`); the CDN's URL
        is signed and gets no header of ours. A kept location answering >= 400 (its signature
        expired, say) or failing to connect is dropped, and the Hub asked again. While one
        read asks the Hub for a file, the file's other reads wait for that answer and use the
        location it gives: a file's ranges read at once (`read_parallel`, the gateway) cost
        the Hub one request, not one each, also when a kept location stops working."""
        key = str(url)
        tried: list[URL] = []
        while len(tried) < 3:
            waiting = self._locating.get(key)
            if waiting is not None:
                await asyncio.shield(waiting)  # answered in `_from_hub`'s finally
            kept = self._location(key)
            if kept is None or kept in tried:
                break
            tried.append(kept)
            direct = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            try:
                r = await request(self.http, "GET", kept, direct, (), self._what())
            except aiohttp.ClientError:
                pass
            else:
                if r.status < 400:
                    return r
                r.release()
            if self._location(key) == kept:
                del self._located[key]
        return await self._from_hub(key, url, headers)

    async def _from_hub(self, key: str, url: URL,
                        headers: Mapping[str, str]) -> aiohttp.ClientResponse:
        asked = None
        if key not in self._locating and key not in self._hub_served:
            asked = self._locating[key] = asyncio.get_running_loop().create_future()
        try:
            r = await request(self.http, "GET", url, headers, ("Authorization",), self._what())
            if r.status < 400:
                if len(self._located) + len(self._hub_served) >= MAX_LOCATIONS:
                    self._located.clear()
                    self._hub_served.clear()
                if r.url.origin() != url.origin():
                    self._located[key] = (r.url, time.monotonic() + LOCATION_SECONDS)
                else:  # served by the Hub itself: its next reads need not wait for another
                    self._hub_served.add(key)
            return r
        finally:
            if asked is not None:
                del self._locating[key]
                asked.set_result(None)

    async def range_reader(self, path: str) -> HfRanges | None:
        """A file the Hub redirects to its CDN, read a range at a time on threads: its
        location is learnt (or found kept) here with a one-byte read through the Hub, and the
        threads GET the signed CDN URL, with no header of ours. None for a file the Hub serves
        itself, or when asking failed (`read` then reads it, and words the error)."""
        commit = await self._resolve()
        try:
            url = URL(self.url(path, commit), encoded=True)
        except ValueError:
            return None
        key = str(url)
        if key in self._hub_served:
            return None
        if self._location(key) is None:
            try:
                (await self._get(url, self._byte_headers("bytes=0-0"))).release()
            except (aiohttp.ClientError, OriginError):
                return None
        return HfRanges(self, key) if self._location(key) is not None else None

    def _location(self, key: str) -> URL | None:
        """The CDN location kept for the `resolve` URL `key`, if still fresh."""
        kept = self._located.get(key)
        if kept is None or kept[1] <= time.monotonic():
            return None
        return kept[0]

    def _http_error(self, r: aiohttp.ClientResponse, path: str, rng: str | None) -> str:
        what = self._what()
        code = r.headers.get("X-Error-Code", "")
        msg = r.headers.get("X-Error-Message", "")
        if code == "GatedRepo":
            return (f"{what}: gated repository; " + (
                "HF_TOKEN is not set" if not self._token else
                "the HF_TOKEN account has not been granted access"))
        if r.status == 401 and msg == "Invalid credentials in Authorization header":
            return f"{what}: HF_TOKEN was rejected (401 invalid credentials)"
        if code == "RepoNotFound" or r.status == 401:
            return (f"{what}: repository not found" + (
                " (or it is private/gated: HF_TOKEN is not set)" if not self._token else
                " (or HF_TOKEN has no access to it)"))
        if code == "RevisionNotFound":
            return f"{what}: commit {self.commit} not found (was the history rewritten?)"
        if code == "EntryNotFound" or r.status == 404:
            return f"{what}: file {path} not found at commit {self.commit}"
        if r.status == 403:
            return f"{what}: {path}: access denied (403{': ' + msg if msg else ''})"
        if r.status == 416:
            return f"{what}: {path}: range {rng} is beyond the end of the file"
        return f"{what}: {path}: {r.status} {r.reason}{': ' + msg if msg else ''}"

    def describe(self) -> dict[str, object]:
        d: dict[str, object] = {"type": self.kind, "repo": self.source.repo,
                                "repoType": self.source.repo_type, "revision": self.revision}
        if self.commit is not None:
            d["commit"] = self.commit
        return d


@dataclass(frozen=True)
class HfRanges:
    """A file's ranges read on threads (engine/threaded_read.py) from the CDN location its
    origin keeps (`HfOrigin._get`): a plain ranged GET of the signed URL (`PlainGet`, no
    header of ours). A location no longer kept, or refused before a byte of the range (its
    signature expired), is `NotRanged`: the file is then read through `HfOrigin.read`, which
    asks the Hub again."""

    origin: HfOrigin
    key: str  # the file's `resolve` URL

    def read_range(self, offset: int, length: int, size: int,
                   into: Callable[[memoryview], None], reading: Reading) -> None:
        location = self.origin._location(self.key)
        if location is None:
            raise NotRanged(f"{self.origin._what()}: the CDN location expired")
        try:
            PlainGet(str(location)).read_range(offset, length, size, into, reading)
        except StatusError as e:
            if e.status in (400, 401, 403, 404, 410):
                raise NotRanged(f"{self.origin._what()}: the CDN refused its location "
                                f"({e.status})") from None
            raise
