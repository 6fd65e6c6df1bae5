"""Following HTTP redirects by hand, so credentials stay with the origin they were configured for.

aiohttp drops only `Authorization`, `Cookie` and `Proxy-Authorization` on a redirect to another
origin; any other configured header (`X-Api-Key`, `PRIVATE-TOKEN`, `${VAR}` values) would go
along to whatever host the origin redirects to. So every request of the http and hf origins is
sent with `allow_redirects=False` and redirects are followed here: at most `MAX_REDIRECTS` hops,
never from https to http, and once a hop leaves the first URL's origin (scheme, host, port),
every credential header is dropped for the rest of that request, even if a later hop comes back.
"""

from __future__ import annotations

from typing import Collection, Mapping

import aiohttp
from yarl import URL

from reconciler.adapters.sources.base import OriginError, safe_url

MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


async def request(http: aiohttp.ClientSession, method: str, url: URL,
                  headers: Mapping[str, str], credentials: Collection[str], what: str,
                  max_redirects: int = MAX_REDIRECTS) -> aiohttp.ClientResponse:
    """`method url` following up to `max_redirects` redirects; the caller releases the response.

    `credentials`: names of the headers in `headers` that only `url`'s origin may receive.
    `what` names the source in errors, which never show a query string (a signed URL's).
    Raises OriginError on a loop or too many hops, a redirect without `Location`, to a
    non-HTTP URL, or from https to http; aiohttp.ClientError as aiohttp does.
    """
    home = url.origin()
    secret = {h.lower() for h in credentials}
    sent = dict(headers)
    target = url
    for hop in range(max_redirects + 1):
        if target.origin() != home:
            sent = {k: v for k, v in sent.items() if k.lower() not in secret}
        r = await http.request(method, target, headers=sent, allow_redirects=False)
        if r.status not in REDIRECT_STATUSES:
            return r
        loc = r.headers.get("Location")
        r.release()
        if not loc:
            raise OriginError(f"{what}: {safe_url(str(target))} answered {r.status} "
                              "without a Location")
        try:
            nxt = target.join(URL(loc, encoded=True))
        except ValueError:
            raise OriginError(f"{what}: {safe_url(str(target))} redirected to an invalid "
                              "URL") from None
        if nxt.scheme not in ("http", "https") or not nxt.host:
            raise OriginError(f"{what}: {safe_url(str(target))} redirected to a non-HTTP URL")
        if target.scheme == "https" and nxt.scheme == "http":
            raise OriginError(f"{what}: refusing a redirect from https to http "
                              f"({safe_url(str(target))} -> {safe_url(str(nxt))})")
        if hop == max_redirects:
            raise OriginError(f"{what}: more than {max_redirects} redirects from "
                              f"{safe_url(str(url))} (a redirect loop? last to "
                              f"{safe_url(str(nxt))})")
        target = nxt
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
