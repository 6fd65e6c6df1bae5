"""A small Hugging Face Hub-compatible HTTP server for tests (aiohttp in a background thread).

It implements the endpoints the installed `huggingface_hub` (2.x) calls for `repo_info`,
`list_repo_tree` and `snapshot_download`/`hf_hub_download`, with the Hub's headers and errors
(see /work/shared/notes/hf-hub-protocol.md):

- `GET /api/{models|datasets|spaces}/{ns}/{name}` (default branch) and
  `.../revision/{rev}` (rev URL-quoted), `?blobs=true` adds size/blobId/lfs to `siblings`;
- `GET /api/{type}s/{ns}/{name}/tree/{rev}[/{path}]?recursive=...&expand=...`, paginated with
  a `Link: <...&cursor=N>; rel="next"` header every `page_size` entries;
- `HEAD`/`GET /[datasets/|spaces/]{ns}/{name}/resolve/{rev}/{path}`: small ("git") files are
  served directly (`ETag` = git blob sha1, `X-Repo-Commit`, `Accept-Ranges`, 206/416 for
  Range); "LFS" files (`lfs_min` bytes or more) answer 302 to `/cdn/{sha256}?sig=...` with
  `X-Linked-Etag`, `X-Linked-Size`, `X-Repo-Commit`, like the Hub's CDN redirect. The CDN path
  is served on a second port (another origin, as a real CDN is another host) unless
  `cdn_same_origin=True`; it checks the signature, never a token.
- Errors as the Hub sends them (`X-Error-Code`/`X-Error-Message`): unknown repo 401 (no token)
  or 404 `RepoNotFound`; private repo without a valid token 401 `RepoNotFound`; any wrong token
  401 `Invalid credentials in Authorization header`; gated repo files without a token 401
  `GatedRepo`; unknown revision 404 `RevisionNotFound`; unknown file 404 `EntryNotFound`.

Repos are in-memory `{path: bytes}`; a commit's sha is a deterministic fake sha1 of its parent
and its files; `push()` replaces a branch's files (old commits stay readable by sha). Every
request is logged (`requests`) and every body byte counted (`bytes_sent`, hub and CDN together,
as written to the client; `sends` has (start, end, bytes) per file response, monotonic time).
`rate` (bytes/s, None = unthrottled) bounds file bodies of hub and CDN together, like
origin_server.py's: one 64 KiB chunk at a time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote, unquote, urlencode

from aiohttp import web

from threaded_server import ThreadedServer, write_body

RepoType = Literal["model", "dataset", "space"]
_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_SHA = re.compile(r"^[0-9a-f]{40}$")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    sha: str
    files: dict[str, bytes]


@dataclass
class Repo:
    repo_type: RepoType
    repo_id: str
    private: bool = False
    gated: bool = False
    branches: dict[str, str] = field(default_factory=dict)  # name -> sha
    commits: dict[str, Commit] = field(default_factory=dict)


@dataclass(frozen=True)
class Req:
    method: str
    port: Literal["hub", "cdn"]
    path: str  # decoded path
    query: str
    range: str | None
    auth: str | None  # the Authorization header as received


class HubServer(ThreadedServer):
    def __init__(self, token: str | None = None, host: str = "127.0.0.1", page_size: int = 3,
                 lfs_min: int = 1024, cdn_same_origin: bool = False,
                 rate: int | None = None) -> None:
        super().__init__()
        self.rate = rate
        self.host = host
        self.token = token  # the one valid token: it may read every private and gated repo
        self.page_size = page_size
        self.lfs_min = lfs_min
        self.cdn_same_origin = cdn_same_origin
        self.port = 0
        self.cdn_port = 0
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[Req] = []
        self.bytes_sent = 0
        self.sends: list[tuple[float, float, int]] = []
        self._blobs: dict[str, bytes] = {}  # sha256 -> bytes, what the CDN serves
        self._secret = b"cdn-signing-key"
        self._lock = threading.Lock()

    # -- control (from the test thread) --------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"



    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def create_repo(self, repo_id: str, files: dict[str, bytes], repo_type: RepoType = "model",
                    private: bool = False, gated: bool = False) -> str:
        """A repo whose branch `main` holds `files`; returns the commit sha."""
        with self._lock:
            self.repos[(repo_type, repo_id)] = Repo(repo_type, repo_id, private, gated)
        return self.push(repo_id, files, repo_type)

    def push(self, repo_id: str, files: dict[str, bytes], repo_type: RepoType = "model",
             branch: str = "main") -> str:
        """Replace the branch's files with `files` (a new commit); returns its sha."""
        with self._lock:
            repo = self.repos[(repo_type, repo_id)]
            parent = repo.branches.get(branch, "")
            h = hashlib.sha1(f"{repo_type}/{repo_id}\0{parent}\0".encode())
            for p in sorted(files):
                h.update(f"{p}\0{hashlib.sha256(files[p]).hexdigest()}\0".encode())
            sha = h.hexdigest()
            repo.commits[sha] = Commit(sha, dict(files))
            repo.branches[branch] = sha
            for data in files.values():
                if len(data) >= self.lfs_min:
                    self._blobs[hashlib.sha256(data).hexdigest()] = data
            return sha

    def resolve_requests(self, repo_id: str) -> list[Req]:
        """Requests for files of `repo_id` (HEAD and GET of `resolve/`)."""
        return [r for r in self.requests if r.port == "hub" and f"{repo_id}/resolve/" in r.path]

    def requested_files(self, repo_id: str) -> set[str]:
        """Paths of `repo_id` that some `resolve/` request asked for."""
        out = set()
        for r in self.resolve_requests(repo_id):
            out.add(r.path.split(f"{repo_id}/resolve/", 1)[1].split("/", 1)[1])
        return out

    def cdn_requests(self) -> list[Req]:
        return [r for r in self.requests if r.path.startswith("/cdn/")]

    # -- the server -----------------------------------------------------------------------------

    async def _start(self) -> None:
        self._throttle = asyncio.Lock()  # one chunk at a time: `rate` bounds the whole server
        if self.cdn_same_origin:
            hub = web.Application()
            hub.router.add_route("*", "/{tail:.*}", self._handle_hub)
            self._runner = web.AppRunner(hub, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.host, 0)
            await site.start()
            self.port = self.cdn_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            return
        # Two listeners, one runner: the CDN is another origin (another port).
        root = web.Application()
        root.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(root, access_log=None)
        await self._runner.setup()
        a = web.TCPSite(self._runner, self.host, 0)
        await a.start()
        b = web.TCPSite(self._runner, self.host, 0)
        await b.start()
        self.port = a._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.cdn_port = b._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        port = request.transport.get_extra_info("sockname")[1] if request.transport else 0
        if port == self.cdn_port:
            return await self._handle_cdn(request)
        return await self._handle_hub(request)

    def _log(self, request: web.Request, port: Literal["hub", "cdn"]) -> None:
        self.requests.append(Req(request.method, port, unquote(request.raw_path.split("?")[0]),
                                 request.query_string, request.headers.get("Range"),
                                 request.headers.get("Authorization")))

    async def _handle_hub(self, request: web.Request) -> web.StreamResponse:
        self._log(request, "hub")
        if request.path.startswith("/cdn/") and self.cdn_same_origin:
            return await self._serve_cdn(request)
        # Raw path segments, each unquoted once: a quoted revision like refs%2Fpr%2F1 is one.
        segs = [unquote(s) for s in request.raw_path.split("?")[0].strip("/").split("/")]
        auth = request.headers.get("Authorization")
        if auth is not None and auth != f"Bearer {self.token}":
            return _error(401, None, "Invalid credentials in Authorization header")
        authed = auth is not None
        if segs[:1] == ["api"] and len(segs) >= 4 and segs[1] in ("models", "datasets", "spaces"):
            rtype = segs[1][:-1]
            repo, err = self._repo(rtype, segs[2], segs[3], authed)
            if err is not None:
                return err
            assert repo is not None
            rest = segs[4:]
            if request.method == "GET" and not rest:
                return self._info(request, repo, "main")
            if request.method == "GET" and len(rest) == 2 and rest[0] == "revision":
                return self._info(request, repo, rest[1])
            if request.method == "GET" and len(rest) >= 2 and rest[0] == "tree":
                return self._tree(request, repo, rest[1], "/".join(rest[2:]))
            return _error(404, None, "Not Found")
        rtype = "model"
        if segs[:1] == ["datasets"] or segs[:1] == ["spaces"]:
            rtype, segs = segs[0][:-1], segs[1:]
        if len(segs) >= 5 and segs[2] == "resolve" and request.method in ("GET", "HEAD"):
            repo, err = self._repo(rtype, segs[0], segs[1], authed, files=True)
            if err is not None:
                return err
            assert repo is not None
            return await self._resolve(request, repo, segs[3], "/".join(segs[4:]))
        return _error(404, None, "Not Found")

    def _repo(self, rtype: str, ns: str, name: str, authed: bool,
              files: bool = False) -> tuple[Repo | None, web.Response | None]:
        repo = self.repos.get((rtype, f"{ns}/{name}"))
        if repo is None or (repo.private and not authed):
            return None, _error(404 if authed else 401, "RepoNotFound", "Repository not found")
        if files and repo.gated and not authed:
            return None, _error(401, "GatedRepo",
                                f"Access to {rtype} {repo.repo_id} is restricted. You must have "
                                "access to it and be authenticated to access it. Please log in.")
        return repo, None

    def _commit(self, repo: Repo, rev: str) -> Commit | None:
        sha = repo.branches.get(rev, rev)
        return repo.commits.get(sha) if _SHA.match(sha) else None

    def _info(self, request: web.Request, repo: Repo, rev: str) -> web.Response:
        c = self._commit(repo, rev)
        if c is None:
            return _error(404, "RevisionNotFound", "Invalid rev id: " + rev)
        blobs = request.query.get("blobs") in ("true", "True", "1")
        siblings = []
        for p in sorted(c.files):
            s: dict[str, object] = {"rfilename": p}
            if blobs:
                s.update(self._entry(p, c.files[p]))
                s.pop("path"), s.pop("type"), s.pop("oid")
                s["blobId"] = git_blob_sha1(c.files[p])
                if "lfs" in s:
                    lfs = s["lfs"]
                    assert isinstance(lfs, dict)
                    s["lfs"] = {"sha256": lfs["oid"], "size": lfs["size"],
                                "pointerSize": lfs["pointerSize"]}
            siblings.append(s)
        body = {"_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id,
                "author": repo.repo_id.split("/")[0], "sha": c.sha, "private": repo.private,
                "gated": "auto" if repo.gated else False, "disabled": False,
                "lastModified": "2024-01-01T00:00:00.000Z", "tags": [], "downloads": 0,
                "likes": 0, "siblings": siblings}
        return _json(body)

    def _entry(self, path: str, data: bytes) -> dict[str, object]:
        e: dict[str, object] = {"type": "file", "oid": git_blob_sha1(data), "size": len(data),
                                "path": path}
        if len(data) >= self.lfs_min:
            e["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                        "pointerSize": 134}
        return e

    def _tree(self, request: web.Request, repo: Repo, rev: str, path: str) -> web.Response:
        c = self._commit(repo, rev)
        if c is None:
            return _error(404, "RevisionNotFound", "Invalid rev id: " + rev)
        recursive = request.query.get("recursive") in ("true", "True", "1")
        base = path.strip("/")
        prefix = base + "/" if base else ""
        dirs: set[str] = set()
        files = []
        for p in sorted(c.files):
            if not p.startswith(prefix):
                continue
            rel = p[len(prefix):]
            parts = rel.split("/")
            for i in range(1, len(parts)):
                if recursive or i == 1:
                    dirs.add(prefix + "/".join(parts[:i]))
            if recursive or len(parts) == 1:
                files.append(self._entry(p, c.files[p]))
        if base and not files and not dirs:
            return _error(404, "EntryNotFound", f"{base} does not exist on \"{rev}\"",
                          {"X-Repo-Commit": c.sha})
        entries = [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0,
                    "path": d} for d in sorted(dirs)] + files
        entries.sort(key=lambda e: str(e["path"]))
        cursor = int(request.query.get("cursor", "0"))
        page = entries[cursor:cursor + self.page_size]
        headers = {}
        if cursor + self.page_size < len(entries):
            q = {k: v for k, v in request.query.items() if k != "cursor"}
            q["cursor"] = str(cursor + self.page_size)
            nxt = f"{self.url}{request.raw_path.split('?')[0]}?{urlencode(q)}"
            headers["Link"] = f'<{nxt}>; rel="next"'
        return _json(page, headers)

    def _sign(self, sha256: str) -> str:
        return hmac.new(self._secret, sha256.encode(), "sha256").hexdigest()[:32]

    async def _resolve(self, request: web.Request, repo: Repo, rev: str,
                       path: str) -> web.StreamResponse:
        c = self._commit(repo, rev)
        if c is None:
            return _error(404, "RevisionNotFound", "Invalid rev id: " + rev)
        data = c.files.get(path)
        if data is None:
            return _error(404, "EntryNotFound", f"{path} does not exist on \"{rev}\"",
                          {"X-Repo-Commit": c.sha})
        common = {"X-Repo-Commit": c.sha, "Accept-Ranges": "bytes"}
        if len(data) >= self.lfs_min:
            sha256 = hashlib.sha256(data).hexdigest()
            host = f"http://{self.host}:{self.cdn_port}"
            loc = f"{host}/cdn/{sha256}?{urlencode({'sig': self._sign(sha256)})}"
            headers = {**common, "Location": loc, "X-Linked-Etag": f'"{sha256}"',
                       "X-Linked-Size": str(len(data)), "ETag": f'"{git_blob_sha1(data)}"'}
            return web.Response(status=302, headers=headers)
        return await self._send(request, data, {**common, "ETag": f'"{git_blob_sha1(data)}"'})

    async def _handle_cdn(self, request: web.Request) -> web.StreamResponse:
        self._log(request, "cdn")
        return await self._serve_cdn(request)

    async def _serve_cdn(self, request: web.Request) -> web.StreamResponse:
        parts = request.path.split("/")
        sha256 = parts[2] if len(parts) == 3 and parts[1] == "cdn" else ""
        data = self._blobs.get(sha256)
        if data is None or not hmac.compare_digest(request.query.get("sig", ""), self._sign(sha256)):
            return web.Response(status=403, text="AccessDenied\n")
        return await self._send(request, data, {"ETag": f'"{sha256}"', "Accept-Ranges": "bytes"})

    async def _send(self, request: web.Request, data: bytes,
                    headers: dict[str, str]) -> web.StreamResponse:
        size = len(data)
        start, end, status = 0, size - 1, 200
        rng = request.headers.get("Range")
        if rng:
            m = _RANGE.match(rng.strip())
            if m and m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            elif m and m.group(2):  # suffix range: the last N bytes
                start = max(0, size - int(m.group(2)))
            if not m or start >= size or start > end:
                return web.Response(status=416, headers={**headers,
                                                         "Content-Range": f"bytes */{size}"})
            status = 206
        body = data[start:end + 1]
        headers = dict(headers)
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        if request.method == "HEAD":
            return web.Response(status=status, headers={**headers,
                                                        "Content-Length": str(len(body))})
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = len(body)
        start, sent = time.monotonic(), 0
        await resp.prepare(request)
        def count(n: int) -> None:
            nonlocal sent
            self.bytes_sent += n
            sent += n

        try:
            await write_body(resp, body, self.rate, self._throttle, count)
        finally:
            self.sends.append((start, time.monotonic(), sent))
        return resp


def _json(body: object, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(body), content_type="application/json",
                        headers=headers or {})


def _error(status: int, code: str | None, message: str,
           headers: dict[str, str] | None = None) -> web.Response:
    h = dict(headers or {})
    if code:
        h["X-Error-Code"] = code
    h["X-Error-Message"] = message
    return web.Response(status=status, text=json.dumps({"error": message}),
                        content_type="application/json", headers=h)


def repo_url_path(repo_type: RepoType, repo_id: str, rev: str, path: str) -> str:
    """The `resolve` path of a file, as huggingface_hub builds it."""
    return f"/{_PREFIX[repo_type]}{repo_id}/resolve/{quote(rev, safe='')}/{quote(path)}"
