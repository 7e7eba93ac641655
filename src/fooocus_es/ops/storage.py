"""Storage faults as values: which errors mean "the log or the data dir cannot be written", and the
server's current faults, so the runner waits instead of dying and admission answers 503/507.

A fault is set by whoever hit it (the runner, admission, the follower) and cleared by the next write
to the same place that works, or by the probe (`StorageHealth.probe`), which the server runs while a
fault is set and once at start-up (an unwritable outputs/ or inputs/ is reported before any task).
"""

from __future__ import annotations

import errno
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal, TypeVar

import anyio
import msgspec
import structlog

from fooocus_es.events.types import now_ms
from fooocus_es.media._atomic import write_temp

log = structlog.get_logger("fooocus_es.storage")

# "unreachable": a networked log or blob store (the fleet's NATS) did not answer; it heals by itself.
FaultKind = Literal["full", "locked", "unwritable", "unreachable", "error"]
# Where a fault is: the event log (SQLite) or one of the data dir's folders.
Place = Literal["log", "outputs", "inputs"]

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_UNWRITABLE_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
# A probe file big enough to need a fresh block on any filesystem (a full tmpfs refuses one page).
_PROBE_BYTES = 4096

T = TypeVar("T")


class StorageFault(msgspec.Struct, frozen=True, kw_only=True):
    place: Place
    kind: FaultKind
    message: str  # the error as the OS or SQLite said it
    since_ms: int

    @property
    def status_code(self) -> int:
        return 507 if self.kind == "full" else 503  # 507 Insufficient Storage: a full disk

    def describe(self) -> str:
        what = "the task log" if self.place == "log" else f"{self.place}/"
        verb = {"full": "is out of space", "locked": "is locked by another process",
                "unwritable": "is not writable", "unreachable": "is unreachable",
                "error": "cannot be written"}[self.kind]  # fmt: skip
        return f"{what} {verb} ({self.message})"


def classify(exc: BaseException) -> FaultKind | None:
    """The storage fault `exc` is, or None when it is not one (a refusal, a bug, a bad value)."""
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", "") or ""
        text = str(exc).lower()
        if name == "SQLITE_FULL" or "disk is full" in text:
            return "full"
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
            return "locked"
        if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")) or "readonly" in text:
            return "unwritable"
        if isinstance(exc, sqlite3.OperationalError) or name.startswith("SQLITE_IOERR"):
            return "error"
        return None  # ProgrammingError (a closed connection at shutdown), IntegrityError: not storage
    if isinstance(exc, ConnectionError):  # never a local disk's: the fleet's NATS (NatsUnavailable)
        return "unreachable"
    if isinstance(exc, OSError):
        if exc.errno in _FULL_ERRNOS:
            return "full"
        if exc.errno in _UNWRITABLE_ERRNOS:
            return "unwritable"
        return "error"
    return None


class StorageHealth:
    """The current fault of each place; thread-safe (the runner thread and the loop both report)."""

    def __init__(self, folders: dict[Place, Path], check_log: Callable[[], None]) -> None:
        self.folders = folders
        self.check_log = check_log  # raises what an append would (locked, read-only)
        self._faults: dict[Place, StorageFault] = {}
        self._lock = threading.Lock()

    def report(self, place: Place, exc: BaseException) -> StorageFault | None:
        """Record `exc` as the place's fault when it is a storage error; None when it is not one."""
        kind = classify(exc)
        if kind is None:
            return None
        with self._lock:
            known = self._faults.get(place)
            fault = StorageFault(place=place, kind=kind, message=str(exc) or type(exc).__name__,
                                 since_ms=known.since_ms if known and known.kind == kind else now_ms())  # fmt: skip
            self._faults[place] = fault
        if known is None or known.kind != kind:
            log.error("storage.fault", place=place, kind=kind, error=fault.message)
        return fault

    def worked(self, place: Place) -> None:
        """A write to `place` succeeded: its fault (if any) is over."""
        with self._lock:
            fault = self._faults.pop(place, None)
        if fault is not None:
            log.info("storage.recovered", place=place, was=fault.kind)

    def faults(self) -> list[StorageFault]:
        with self._lock:
            return list(self._faults.values())

    def first(self) -> StorageFault | None:
        """The fault admission answers with: a full disk first (507), else any."""
        faults = self.faults()
        return next((f for f in faults if f.kind == "full"), faults[0] if faults else None)

    def probe(self) -> list[StorageFault]:
        """Blocking: write a temp file in each folder and take the log's write lock; update the faults."""
        for place, folder in self.folders.items():
            try:
                write_temp(folder, b"\0" * _PROBE_BYTES).unlink()
            except OSError as exc:
                self.report(place, exc)
            else:
                self.worked(place)
        try:
            self.check_log()
        except Exception as exc:
            if self.report("log", exc) is None:
                raise
        else:
            self.worked("log")
        return self.faults()

    async def watch(self, interval_s: float = 1.0) -> None:
        """On the loop: while any fault is set, probe every `interval_s` so the faults clear on their own."""
        while True:
            await anyio.sleep(interval_s)
            if self.faults():
                await anyio.to_thread.run_sync(self.probe)


async def until_stored(health: StorageHealth | None, place: Place, write: Callable[[], Awaitable[T]]) -> T:
    """Retry `write` while it fails with a storage error (for writes that are safe to repeat)."""
    pause = 0.2
    while True:
        try:
            result = await write()
        except Exception as exc:
            if classify(exc) is None:
                raise
            if health is not None:
                health.report(place, exc)
            else:
                log.warning("storage.retry", place=place, error=str(exc))
            await anyio.sleep(pause)
            pause = min(pause * 2, 2.0)
            continue
        if health is not None:
            health.worked(place)
        return result
