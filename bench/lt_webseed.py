"""libtorrent alone, its web seed pointed straight at the origin: the ceiling of the product's
download path, whatever the gateway does (bench/single_origin.py `--libtorrent-alone`).

    python -m bench.lt_webseed --torrent T --url URL --out DIR [--urls 2] [--timeout 300]

One libtorrent session with the product's settings (adapters/swarm.session_settings) and
`--urls` web-seed URLs for the same origin (`URL/`, `URL/s1/`...: the caller makes `s1`... and
the torrent's name resolve to the origin's root, e.g. symlinks; the product gives the gateway
several URLs per torrent too), in its own process so that nothing else holds its
GIL. Prints one JSON line: {"seconds", "cpu_seconds", "complete"}; the clock runs from adding
the torrent to libtorrent reporting it complete (every piece hashed and written).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import libtorrent as lt

from reconciler.adapters.swarm import session_settings

POLL = 0.01  # seconds between looks at the torrent: well under the times measured


def urls(url: str, count: int) -> list[str]:
    """`count` distinct URLs for one origin (libtorrent keys web seeds by URL)."""
    base = url.rstrip("/") + "/"
    return [base if k == 0 else f"{base}s{k}/" for k in range(count)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--torrent", required=True)
    ap.add_argument("--url", required=True, help="the origin's base URL (files under <name>/)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--urls", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--set", default="{}", help="libtorrent settings over the product's, as JSON "
                    "(to try one: '{\"hashing_threads\": 2}')")
    a = ap.parse_args(argv)
    ses = lt.session({**session_settings("127.0.0.1:0"), **json.loads(a.set)})
    p = lt.add_torrent_params()
    p.ti = lt.torrent_info(a.torrent)
    p.save_path = a.out
    p.url_seeds = urls(a.url, a.urls)
    t0, c0 = time.monotonic(), os.times()
    h = ses.add_torrent(p)
    while not h.status().is_seeding and time.monotonic() - t0 < a.timeout:
        time.sleep(POLL)
    c1 = os.times()
    print(json.dumps({"seconds": round(time.monotonic() - t0, 3),
                      "cpu_seconds": round(c1.user - c0.user + c1.system - c0.system, 3),
                      "complete": bool(h.status().is_seeding)}))
    return 0 if h.status().is_seeding else 1


if __name__ == "__main__":
    sys.exit(main())
