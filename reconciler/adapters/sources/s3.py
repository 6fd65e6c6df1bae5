"""`s3` sources: objects of an S3 (or S3-compatible) bucket, under a prefix or as a list of keys.

Credentials come from boto3's standard chain (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/
`AWS_SESSION_TOKEN`, `AWS_PROFILE` or `profile:`, the shared credentials and config files, SSO,
container and instance metadata...). They stay inside botocore: no message built here carries
them (errors name the bucket, key and S3 error code only), nor does `describe()`.

What a source selects:
- `keys: [..]`: exactly those objects, each named by its key;
- `prefix: P`: every object under the *directory* `P/`, named by its key relative to it.
  `prefix: models/llama` and `prefix: models/llama/` are the same thing: the keys
  `models/llama/config.json` and `models/llama/sub/x.bin` become `config.json` and `sub/x.bin`,
  while `models/llama-old/...` or a key `models/llama` itself are not part of it;
- neither (or `prefix: ""`): the whole bucket.
Keys ending in `/` (the zero-byte "directory markers" consoles create) are skipped.

boto3 is synchronous: every call runs in a worker thread, and object bodies are streamed one
chunk per thread hop, never held whole in memory. The threads are the origin's own pool, as
large as its HTTP connection pool (`connections`, the node's `originConnections`): the event
loop's default executor has min(32, CPUs + 4) threads, which would cap the gateway's concurrent
range reads at 6 on a 2-core machine. `lock`, direct reads and unlocked builds read ranges on
threads of their own instead (`S3Ranges`). boto3 is imported on first use only (it
costs a noticeable part of the CLI's start-up), so nodes without S3 sources never load it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Mapping

from reconciler.core.paths import is_clean_relative
from reconciler.model.desired import S3Source
from reconciler.adapters.sources.base import Origin, OriginError, OriginFile, chunks, range_header, safe_url
from reconciler.adapters.sources.threaded import Reading, Stopped

# Error codes of responses without a body (HEAD requests): only the HTTP status is known.
_BODYLESS = {"400": "BadRequest", "403": "AccessDenied", "404": "NotFound",
             "301": "PermanentRedirect"}
# Environment values that must never appear in a message, whatever a library puts in one.
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")

# Small reads: when libtorrent hangs up, at most this much was read from S3 for nothing
# (boto3's body.read(n) blocks until n bytes are in).
READ_CHUNK = 256 << 10
DEFAULT_CONNECTIONS = 64  # the node's originConnections default


class S3Error(OriginError):
    """An OriginError from S3 itself; `code` is its error code (None: no response)."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


def normalize_prefix(prefix: str | None) -> str:
    """The key prefix a `prefix:` value selects: "" (whole bucket) or "dir/" (directory)."""
    p = (prefix or "").rstrip("/")
    return p + "/" if p else ""


class S3Origin(Origin):
    kind = "s3"

    def __init__(self, source: S3Source, connections: int = DEFAULT_CONNECTIONS) -> None:
        self.source = source
        self.bucket = source.bucket
        self.prefix = normalize_prefix(source.prefix)
        self.connections = max(1, connections)  # concurrent requests: threads and pool
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._threads: ThreadPoolExecutor | None = None

    async def _in_thread(self, fn: Callable[[], Any]) -> Any:
        """`fn()` on this origin's own thread pool (see the module doc)."""
        if self._threads is None:
            self._threads = ThreadPoolExecutor(self.connections, thread_name_prefix="s3")
        return await asyncio.get_running_loop().run_in_executor(self._threads, fn)

    def close(self) -> None:
        """Let the idle worker threads go (reads in flight finish first, in the background)."""
        if self._threads is not None:
            self._threads.shutdown(wait=False)
            self._threads = None

    # -- plumbing ------------------------------------------------------------------------------

    def _get_client(self) -> Any:
        """The boto3 client, created on first use (in a worker thread: it reads files)."""
        with self._client_lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                s = self.source
                session = boto3.session.Session(profile_name=s.profile) if s.profile \
                    else boto3.session.Session()
                config = Config(
                    connect_timeout=10, read_timeout=60,
                    max_pool_connections=self.connections,
                    retries={"max_attempts": 3, "mode": "standard"},
                    # S3-compatible stores (MinIO, SeaweedFS, Ceph) want path-style requests.
                    s3={"addressing_style": "path"} if s.endpoint_url else None)
                self._client = session.client("s3", endpoint_url=s.endpoint_url,
                                              region_name=s.region, config=config)
            return self._client

    def _where(self, key: str | None = None) -> str:
        if key is not None:
            return f"s3://{self.bucket}/{key}"
        return f"s3://{self.bucket}/{self.prefix}"

    def _error(self, e: Exception, key: str | None = None) -> S3Error:
        """A secret-free OriginError for a boto3/botocore exception."""
        import botocore.exceptions as bex

        where = self._where(key)
        code: str | None = None
        if isinstance(e, bex.ClientError):
            err = e.response.get("Error", {}) or {}
            status = str(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            code = str(err.get("Code") or status or "Unknown")
            code = _BODYLESS.get(code, code)
            message = str(err.get("Message") or "").strip()
            if message in ("", "Not Found", "Forbidden", "Bad Request"):
                message = ""
            text = f"s3 source {where}: {code}" + (f" (HTTP {status})" if status else "")
            if message:
                text += f": {message}"
        elif isinstance(e, (bex.EndpointConnectionError, bex.ConnectTimeoutError)):
            text = (f"s3 source {where}: cannot connect to the S3 endpoint "
                    f"{self._endpoint()} ({e.__class__.__name__})")
        elif isinstance(e, bex.ReadTimeoutError):
            text = f"s3 source {where}: read timed out from the S3 endpoint {self._endpoint()}"
        elif isinstance(e, bex.NoCredentialsError):
            text = (f"s3 source {where}: no AWS credentials found (environment, profile, shared "
                    "credentials/config files, instance metadata)")
        elif isinstance(e, bex.PartialCredentialsError):
            text = f"s3 source {where}: incomplete AWS credentials ({e.__class__.__name__})"
        elif isinstance(e, bex.ProfileNotFound):
            text = f"s3 source {where}: AWS profile {self.source.profile!r} not found"
        elif isinstance(e, bex.NoRegionError):
            text = f"s3 source {where}: no AWS region configured (set region: or AWS_REGION)"
        elif any(w in type(e).__name__ for w in ("Credential", "Token", "SSO", "Sso")):
            # Their text can quote a credential_process's or an SSO tool's output: name only.
            text = f"s3 source {where}: cannot get AWS credentials ({e.__class__.__name__})"
        else:
            text = f"s3 source {where}: {e.__class__.__name__}: {e}"
        return S3Error(_scrub(text), code)

    def _endpoint(self) -> str:
        return safe_url(self.source.endpoint_url) if self.source.endpoint_url \
            else "(AWS default)"

    async def _call(self, key: str | None, fn: Callable[[Any], Any]) -> Any:
        """`fn(client)` in a worker thread; boto3 errors become OriginError."""
        return await self._in_thread(lambda: self._call_here(key, fn))

    def _call_here(self, key: str | None, fn: Callable[[Any], Any]) -> Any:
        """`fn(client)` on the calling thread; boto3 errors become OriginError."""
        try:
            return fn(self._get_client())
        except ImportError as e:
            raise OriginError(f"s3 sources need boto3, which is not installed ({e.name})") from None
        except Exception as e:
            if _is_boto_error(e):
                raise self._error(e, key) from None
            raise

    async def _diagnose(self, e: OriginError, key: str) -> OriginError:
        """HEAD errors carry no body, hence no S3 error code (NoSuchBucket? NoSuchKey?
        SignatureDoesNotMatch?): ask again with a one-byte GET, whose error has one."""
        def probe(c: Any) -> None:
            c.get_object(Bucket=self.bucket, Key=key, Range="bytes=0-0")["Body"].close()
        if not (isinstance(e, S3Error) and e.code in _BODYLESS.values()):
            return e  # it has a code already, or there was no response at all
        try:
            await self._call(key, probe)
        except OriginError as better:
            return better
        return e

    def _key(self, path: str) -> str:
        if self.source.keys:
            if path not in self.source.keys:
                raise OriginError(f"s3 source s3://{self.bucket}: no key {path} in keys")
            return path
        return self.prefix + path

    # -- Origin --------------------------------------------------------------------------------

    async def list_files(self) -> list[OriginFile]:
        files = await (self._head_keys() if self.source.keys else self._list_prefix())
        if not files:
            what = f"under prefix {self.prefix!r}" if self.prefix else "at all"
            if self.source.keys:
                what = "for the listed keys"
            raise OriginError(f"s3 source: bucket {self.bucket} has no objects {what}")
        _check_names(files, self._where())
        return sorted(files, key=lambda f: f.path)

    async def _head_keys(self) -> list[OriginFile]:
        out: list[OriginFile] = []
        for key in self.source.keys:
            def head(c: Any, k: str = key) -> Any:
                return c.head_object(Bucket=self.bucket, Key=k)
            try:
                h = await self._call(key, head)
            except OriginError as e:
                raise await self._diagnose(e, key) from None
            rev: dict[str, object] = {"etag": h.get("ETag")}
            if h.get("VersionId") not in (None, "", "null"):
                rev["versionId"] = h["VersionId"]
            rev["size"] = int(h["ContentLength"])
            out.append(OriginFile(key, int(h["ContentLength"]), rev))
        return out

    async def _list_prefix(self) -> list[OriginFile]:
        def scan(c: Any) -> list[OriginFile]:
            res = []
            pages = c.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                Prefix=self.prefix)
            for page in pages:
                for obj in page.get("Contents", ()):
                    key = obj["Key"]
                    if not key.startswith(self.prefix) or key.endswith("/"):
                        continue  # a directory marker (or a server ignoring Prefix)
                    size = int(obj["Size"])
                    res.append(OriginFile(key[len(self.prefix):], size,
                                          {"etag": obj.get("ETag"), "size": size}))
            return res
        return await self._call(None, scan)

    async def read(self, path: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        key = self._key(path)
        if length is not None and length <= 0:
            return
        kw: dict[str, object] = {"Bucket": self.bucket, "Key": key}
        rng = range_header(offset, length)
        if rng is not None:
            kw["Range"] = rng
        resp = await self._call(key, lambda c: c.get_object(**kw))
        body = resp["Body"]
        if "Range" in kw and not resp.get("ContentRange"):
            body.close()
            raise OriginError(f"s3 source {self._where(key)}: the server ignored the Range "
                              "request")
        busy = threading.Lock()  # held by the thread reading `body`; close only when free

        def chunk(n: int) -> bytes:
            with busy:
                return body.read(n)  # type: ignore[no-any-return]

        async def read(n: int) -> bytes:
            try:
                return await self._in_thread(lambda: chunk(n))  # type: ignore[no-any-return]
            except Exception as e:
                if _is_boto_error(e):
                    raise self._error(e, key) from None
                # urllib3 protocol errors, a reset connection...
                raise OriginError(_scrub(f"s3 source {self._where(key)}: reading failed: "
                                         f"{e.__class__.__name__}")) from None

        try:
            async for data in chunks(read, length, READ_CHUNK):
                yield data
        finally:
            # Cancelled while a worker thread still reads: close once it is done with the body.
            if busy.acquire(blocking=False):
                try:
                    body.close()
                finally:
                    busy.release()
            else:
                def close_later() -> None:
                    with busy:
                        body.close()
                threading.Thread(target=close_later, daemon=True).start()

    async def range_reader(self, path: str) -> S3Ranges:
        return S3Ranges(self, path)

    def describe(self) -> dict[str, object]:
        d: dict[str, object] = {"type": self.kind, "bucket": self.bucket}
        if self.source.keys:
            d["keys"] = len(self.source.keys)
        else:
            d["prefix"] = self.prefix
        if self.source.endpoint_url:
            d["endpointUrl"] = safe_url(self.source.endpoint_url)
        if self.source.region:
            d["region"] = self.source.region
        return d


@dataclass(frozen=True)
class S3Ranges:
    """An object read a range at a time on threads (engine/threaded_read.py): each a ranged
    `get_object` whose body is read into the thread's own buffer (`readinto`), written and
    hashed there. Through the event loop (`read`: a thread hop per 256 KiB chunk, a new bytes
    object each) `lock` read SeaweedFS at 175-218 MiB/s, where 8 threads reading ranges with
    `readinto` took 625-843 MiB/s (bench/README, "Lock hashing")."""

    origin: S3Origin
    path: str

    def read_range(self, offset: int, length: int, size: int,
                   into: Callable[[memoryview], None], reading: Reading) -> None:
        if length <= 0:
            return
        o = self.origin
        key = o._key(self.path)
        where = f"s3 source {o._where(key)}"
        end = offset + length - 1
        if reading.stopped.is_set():
            raise Stopped()
        resp = o._call_here(key, lambda c: c.get_object(Bucket=o.bucket, Key=key,
                                                        Range=f"bytes={offset}-{end}"))
        body = resp["Body"]
        try:
            got = (resp.get("ContentRange") or "").strip()
            whole = not got and offset == 0 and length == size == resp.get("ContentLength")
            if got != f"bytes {offset}-{end}/{size}" and not whole:
                raise OriginError(f"{where}: sent range {got!r} for bytes {offset}-{end} of "
                                  f"{size} (did it change while locking?)")
            sock = _socket_of(body)
            with reading.holding(sock) if sock is not None else contextlib.nullcontext():
                view = memoryview(bytearray(min(READ_CHUNK, length)))
                left = length
                while left:
                    if reading.stopped.is_set():
                        raise Stopped()
                    try:
                        n = body.readinto(view[:min(len(view), left)])
                    except Exception as e:
                        if reading.stopped.is_set():  # its socket was shut down under it
                            raise Stopped() from None
                        if _is_boto_error(e):
                            raise o._error(e, key) from None
                        raise OriginError(_scrub(f"{where}: reading failed: "
                                                 f"{e.__class__.__name__}")) from None
                    if not n:
                        if reading.stopped.is_set():
                            raise Stopped()
                        raise OriginError(f"{where}: sent {length - left} of {length} bytes "
                                          f"from {offset}")
                    into(view[:n])  # the disk's OSError as it is
                    left -= n
        finally:
            body.close()


def _socket_of(body: Any) -> socket.socket | None:
    """The socket under a botocore body (urllib3's response), for `Reading.stop` to shut down;
    None if this urllib3 does not show it (a stop then waits for the next chunk)."""
    conn = getattr(getattr(body, "_raw_stream", None), "connection", None)
    sock = getattr(conn, "sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _is_boto_error(e: Exception) -> bool:
    import botocore.exceptions as bex

    return isinstance(e, (bex.BotoCoreError, bex.ClientError))


def _check_names(files: list[OriginFile], where: str) -> None:
    """Every name must be a clean relative path, and no file may also be a directory."""
    names = {f.path for f in files}
    for f in files:
        parts = f.path.split("/")
        if not is_clean_relative(f.path):
            raise OriginError(f"s3 source {where}: key {f.path!r} (relative to the prefix) "
                              "has an empty, '.' or '..' path segment: it cannot be a file name")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in names:
                raise OriginError(f"s3 source {where}: {'/'.join(parts[:i])!r} is both an "
                                  f"object and a directory (of {f.path!r})")



def _scrub(text: str, env: Mapping[str, str] | None = None) -> str:
    """`text` with any secret from the environment masked: a last line of defence."""
    env = os.environ if env is None else env
    for name in _SECRET_ENV:
        value = env.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text
