"""The event log in SQLite (table task_events), with numbered migrations: the single-machine backend.

One writer connection guarded by a lock (appends come from request worker threads and the runner
thread); readers get their own connection per thread (sqlite3 objects are thread-bound). Followers
(`tail`) wake on this process's appends and poll for other processes' ones.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio.to_thread
import msgspec
from sqlite_utils import Database

from fooocus_es.events.log import StaleVersion, TaskAlreadyEnded
from fooocus_es.events.types import (
    TERMINAL_TYPES,
    Envelope,
    Event,
    TaskProgress,
    decode_event,
    encode_for_log,
    event_type,
)

PAGE = 1000
# Previews never enter the log; the newest few ride beside it so a follower can hand them on.
KEPT_PREVIEWS = 256


def default_migrations_dir() -> Path:
    # fooocus_es/migrations is a symlink to the top-level migrations/ (the design card's place for
    # them); building a wheel copies the files, so installed packages carry their schema too.
    return Path(__file__).resolve().parents[1] / "migrations"


# How long a write waits for another connection's lock before it fails as "database is locked".
BUSY_TIMEOUT_S = 10.0


def connect(path: Path, *, readonly: bool = False, busy_timeout_s: float = BUSY_TIMEOUT_S) -> Database:
    conn = sqlite3.connect(path, timeout=busy_timeout_s, check_same_thread=False, isolation_level=None)
    db = Database(conn)
    # NORMAL in WAL mode survives process crashes and is ~7x faster than FULL for one-row commits.
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    if readonly:
        db.execute("PRAGMA query_only=ON")
    return db


def migrate(db: Database, folder: Path) -> int:
    """Apply NNNN_*.sql files above PRAGMA user_version, each atomically with its version bump."""
    current = db.execute("PRAGMA user_version").fetchone()[0]
    files = sorted(folder.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    if not files:  # a broken install must not start on an empty schema
        raise FileNotFoundError(f"no migration files in {folder}")
    for path in files:
        number = int(path.name[:4])
        if number <= current:
            continue
        try:
            db.conn.executescript(f"BEGIN IMMEDIATE;\n{path.read_text()}\nPRAGMA user_version={number};\nCOMMIT;")
        except sqlite3.Error:
            if db.conn.in_transaction:
                db.conn.rollback()
            raise
        current = number
    return current


class ThreadReaders:
    """One read-only connection per thread to a database file (sqlite3 objects are thread-bound)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    def get(self) -> Database:
        db = getattr(self._local, "db", None)
        if db is None:
            db = connect(self.path, readonly=True)
            self._local.db = db
        return db


class SqliteEventLog:
    """`EventLog` on one SQLite file (WAL): durable on commit, followed by any number of tails."""

    def __init__(
        self,
        path: Path,
        migrations_dir: Path | None = None,
        *,
        poll_s: float = 0.25,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.poll_s = poll_s  # how soon a follower sees another process's appends
        self._writer = connect(path, busy_timeout_s=busy_timeout_s)
        migrate(self._writer, migrations_dir or default_migrations_dir())
        self._lock = threading.Lock()
        self._readers = ThreadReaders(path)
        self._appended = threading.Condition()
        self._head = 0  # the highest seq this process appended
        self._previews: OrderedDict[int, str] = OrderedDict()
        self._closed = False

    # -- writing --------------------------------------------------------------------------------
    def append(self, event: Event, expected_version: int | None = None) -> int:
        payload = encode_for_log(event).decode()
        conn = self._writer.conn
        with self._lock:
            try:
                with conn:  # BEGIN ... COMMIT, or ROLLBACK on any exception
                    conn.execute("BEGIN IMMEDIATE")
                    row = conn.execute(
                        "SELECT version, type FROM task_events WHERE task_id = ? ORDER BY seq DESC LIMIT 1",
                        (event.task_id,),
                    ).fetchone()
                    version, last_type = row if row else (0, None)
                    if last_type in TERMINAL_TYPES:
                        raise TaskAlreadyEnded(event.task_id, version)
                    if expected_version is not None and expected_version != version:
                        raise StaleVersion(event.task_id, expected_version, version)
                    cursor = conn.execute(
                        "INSERT INTO task_events (task_id, type, at_ms, payload, version) VALUES (?, ?, ?, ?, ?)",
                        (event.task_id, event_type(event), event.at_ms, payload, version + 1),
                    )
            except sqlite3.IntegrityError as exc:  # another process took (task_id, version) meanwhile
                raise StaleVersion(event.task_id, version, version + 1) from exc
            seq = int(cursor.lastrowid or 0)
            if isinstance(event, TaskProgress) and event.preview is not None:
                self._previews[seq] = event.preview
                while len(self._previews) > KEPT_PREVIEWS:
                    self._previews.popitem(last=False)
        with self._appended:
            self._head = max(self._head, seq)
            self._appended.notify_all()
        return seq

    def check_writable(self) -> None:
        """Take the write lock and let it go: raises what an append would (locked, read-only file)."""
        conn = self._writer.conn
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")

    # -- reading --------------------------------------------------------------------------------
    def reader(self) -> Database:
        """This thread's read-only connection to the file (the read model's tables live in it too)."""
        return self._readers.get()

    def version(self, task_id: str) -> int:
        row = self.reader().execute("SELECT MAX(version) FROM task_events WHERE task_id = ?", (task_id,)).fetchone()
        return int(row[0] or 0)

    def last_seq(self) -> int:
        return int(self.reader().execute("SELECT COALESCE(MAX(seq), 0) FROM task_events").fetchone()[0])

    def read(self, *, after_seq: int = 0, task_id: str | None = None) -> Iterator[Envelope]:
        """Stored events in log order, decoded, in pages so a long log never sits in memory at once."""
        last = after_seq
        while page := self._page(last, task_id):
            yield from page
            last = page[-1].seq

    def _page(self, after_seq: int, task_id: str | None = None, *, live: bool = False) -> list[Envelope]:
        db = self.reader()
        if task_id is None:
            rows = db.execute(
                "SELECT seq, payload FROM task_events WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, PAGE)
            ).fetchall()
        else:
            rows = db.execute(
                "SELECT seq, payload FROM task_events WHERE task_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (task_id, after_seq, PAGE),
            ).fetchall()
        if not live:  # what is stored, exactly (the audit)
            return [Envelope(seq, decode_event(payload)) for seq, payload in rows]
        return [Envelope(seq, self._with_preview(seq, decode_event(payload))) for seq, payload in rows]

    def _with_preview(self, seq: int, event: Event) -> Event:
        preview = self._previews.get(seq) if isinstance(event, TaskProgress) else None
        return msgspec.structs.replace(event, preview=preview) if preview is not None else event

    async def tail(self, from_seq: int) -> AsyncIterator[list[Envelope]]:
        last = from_seq
        while not self._closed:
            batch = await anyio.to_thread.run_sync(self._next_page, last, abandon_on_cancel=True)
            if batch:
                last = batch[-1].seq
                yield batch

    def _next_page(self, after_seq: int) -> list[Envelope]:
        """Worker thread: the next stored page after `after_seq`, waiting up to poll_s for one."""
        with self._appended:
            if self._head <= after_seq and not self._closed:
                self._appended.wait(self.poll_s)
        return self._page(after_seq, live=True)

    # -- upkeep ---------------------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Reset the WAL when idle; under constant readers it otherwise only grows."""
        with self._lock:
            self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self._appended:
            self._closed = True
            self._appended.notify_all()
        self._writer.conn.close()
