"""One process per `stateDir`: an exclusive `flock` on `<stateDir>/lock`.

Two reconcilers on one store each take the other's moves for corruption and pull from the
origin twice. The lock is advisory but every process that writes the store takes it; it is
released by the kernel when the holder exits, even by `kill -9`, so it never goes stale.
`status` and `wait` only read, and take no lock.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

LOCK_FILE = "lock"


class StateDirBusy(Exception):
    """Another process holds this `stateDir`."""

    def __init__(self, state_dir: Path, holder: str) -> None:
        self.state_dir = state_dir
        self.holder = holder
        super().__init__(
            f"{state_dir} is in use by another syncbit-reconcile process ({holder}); "
            "one process per stateDir: stop it first (systemctl stop syncbit-reconcile), or "
            "give this one another stateDir")


class StateDirLock:
    """Held from `acquire()` until `release()` or the process ends."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "StateDirLock":
        """Take the lock at once or raise StateDirBusy naming the holder's PID."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StateDirBusy(self.state_dir, _holder(self.path)) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the last descriptor drops the flock

    def __enter__(self) -> "StateDirLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        return "PID unknown"
    return f"PID {pid}" if pid.isdigit() else "PID unknown"
