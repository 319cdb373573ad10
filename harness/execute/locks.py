"""Locks that keep two processes from training one run, or writing one experiment's runs.csv,
at once.

A lock is an advisory ``flock`` on a file (``RUN_DIR/.lock``, ``RESULTS/NAME/.lock``) that
also records who holds it (host, pid, since), for the messages. The kernel drops a flock when
its process dies, however it dies, so a lock left by a killed process is free again at once:
nothing to clean up, no stale-lock heuristics. (flock reaches across machines on NFSv4 and
Lustre mounts with locking enabled, as SLURM clusters' shared file systems usually are.)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LOCK_FILE", "Held", "RunLock", "experiment_lock", "holder_of"]

LOCK_FILE = ".lock"


@dataclass(frozen=True)
class Held(Exception):
    """The lock is held by another process."""

    path: Path
    holder: str

    def __str__(self) -> str:
        return f"{self.path.parent} is held by {self.holder}"


def _describe(info: dict[str, object]) -> str:
    since = info.get("since")
    when = (
        time.strftime("%H:%M:%S", time.localtime(float(since)))
        if isinstance(since, (int, float))
        else "?"
    )
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')} since {when}"


def _holder(fd: int) -> str:
    """The holder recorded in an open lock file, described."""
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        info = {}
    return _describe(info if isinstance(info, dict) else {})


def holder_of(directory: Path) -> str | None:
    """Who holds ``directory``'s lock ("pid 123 on host since 10:02:03"), or None if free."""
    path = Path(directory) / LOCK_FILE
    if not path.exists():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(fd)
    finally:
        os.close(fd)
    return None


class RunLock:
    """An exclusive, non-blocking lock on a run directory, held for a run's whole training.

    ``acquire`` raises `Held` naming the holder when another process has it; the lock is
    released by ``release``, by leaving the ``with`` block, or by the process's death.
    """

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise Held(self.path, holder) from None
        info = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def experiment_lock(root: Path, timeout_s: float = 600.0) -> Iterator[None]:
    """Hold ``root``'s experiment lock (blocking, up to ``timeout_s``): collect, fit and plot
    of one experiment run one process at a time.

    Raises
    ------
    Held
        Another process kept it for ``timeout_s``.
    """
    lock = RunLock(root)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            lock.acquire()
            break
        except Held:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        yield
    finally:
        lock.release()
