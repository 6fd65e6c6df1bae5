import sys
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from reconciler.adapters.api import ApiServer  # noqa: E402
from harness import Daemon, NodeHome, write_data  # noqa: E402
from origin_server import OriginServer  # noqa: E402


@pytest.fixture
async def api_servers() -> AsyncIterator[Callable[..., Awaitable[ApiServer]]]:
    """`await api_servers(get_status, listen="127.0.0.1:0", **kw)`: a started ApiServer,
    stopped when the test ends."""
    started: list[ApiServer] = []

    async def make(get_status: Callable[[], dict | None], listen: str = "127.0.0.1:0",
                   **kw: object) -> ApiServer:
        srv = ApiServer(listen, get_status, **kw)  # type: ignore[arg-type]
        started.append(srv)
        await srv.start()
        return srv

    try:
        yield make  # type: ignore[misc]
    finally:
        for srv in started:
            await srv.stop()


@pytest.fixture
def daemons() -> Iterator[Callable[..., Daemon]]:
    """`daemons(home, env=None, level=None)`: a started Daemon, stopped when the test ends."""
    started: list[Daemon] = []

    def start(home: NodeHome, env: dict[str, str] | None = None, level: str | None = None
              ) -> Daemon:
        d = Daemon(home, env, level)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


@pytest.fixture
def origins(tmp_path: Path) -> Iterator[Callable[..., OriginServer]]:
    """`origins(files, name="origin", **kw)`: an OriginServer serving `files` (written under
    tmp_path/name; `kw` as OriginServer takes them: rate, conn_rate, token...), started, and
    stopped when the test ends."""
    started: list[OriginServer] = []

    def start(files: dict[str, bytes], name: str = "origin", **kw: object) -> OriginServer:
        server = OriginServer(write_data(tmp_path / name, files), **kw).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
