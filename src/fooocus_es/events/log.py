"""The append-only event log in SQLite (table task_events), with numbered migrations.

One writer connection guarded by a lock (appends come from request worker threads and the runner
thread); readers get their own connection per thread (sqlite3 objects are thread-bound).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from sqlite_utils import Database

from fooocus_es.events.types import Event, decode_event, encode_for_log, event_type

# Called inside the append transaction: the read model commits or rolls back with the event.
Projector = Callable[[Database, int, Event], None]


def default_migrations_dir() -> Path:
    # fooocus_es/migrations is a symlink to the top-level migrations/ (the design card's place for
    # them); building a wheel copies the files, so installed packages carry their schema too.
    return Path(__file__).resolve().parents[1] / "migrations"


def connect(path: Path, *, readonly: bool = False) -> Database:
    conn = sqlite3.connect(path, timeout=10.0, check_same_thread=False, isolation_level=None)
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


class EventLog:
    def __init__(self, path: Path, migrations_dir: Path | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._writer = connect(path)
        migrate(self._writer, migrations_dir or default_migrations_dir())
        self._lock = threading.Lock()
        self._readers = threading.local()

    def append(
        self,
        event: Event,
        project: Projector | None = None,
        after_commit: Callable[[int], None] | None = None,
    ) -> int:
        """Durably append one event, applying `project` in the same transaction. Returns its seq.

        `after_commit(seq)` runs while the lock is still held, so whatever it does (publishing)
        happens in seq order across threads.
        """
        with self._lock:
            seq = self._append_locked(event, project)
            if after_commit is not None:
                after_commit(seq)
            return seq

    def _append_locked(self, event: Event, project: Projector | None) -> int:
        db = self._writer
        with db.conn:  # BEGIN ... COMMIT, or ROLLBACK on any exception
            db.conn.execute("BEGIN IMMEDIATE")
            cursor = db.conn.execute(
                "INSERT INTO task_events (task_id, type, at_ms, payload) VALUES (?, ?, ?, ?)",
                (event.task_id, event_type(event), event.at_ms, encode_for_log(event).decode()),
            )
            seq = int(cursor.lastrowid or 0)
            if project is not None:
                project(db, seq, event)
        return seq

    def reader(self) -> Database:
        db = getattr(self._readers, "db", None)
        if db is None:
            db = connect(self.path, readonly=True)
            self._readers.db = db
        return db

    def read(self, *, after_seq: int = 0, task_id: str | None = None) -> Iterator[tuple[int, Event]]:
        """Events in log order, decoded. Streams in pages so a long log never sits in memory at once."""
        db = self.reader()
        last = after_seq
        while True:
            if task_id is None:
                rows = db.execute(
                    "SELECT seq, payload FROM task_events WHERE seq > ? ORDER BY seq LIMIT 1000", (last,)
                ).fetchall()
            else:
                rows = db.execute(
                    "SELECT seq, payload FROM task_events WHERE task_id = ? AND seq > ? ORDER BY seq LIMIT 1000",
                    (task_id, last),
                ).fetchall()
            if not rows:
                return
            for seq, payload in rows:
                yield seq, decode_event(payload)
            last = rows[-1][0]

    def writer_transaction(self, work: Callable[[Database], None]) -> None:
        """Run `work` on the writer connection in one transaction (used by `replay`)."""
        with self._lock, self._writer.conn:
            self._writer.conn.execute("BEGIN IMMEDIATE")
            work(self._writer)

    def checkpoint(self) -> None:
        """Reset the WAL when idle; under constant readers it otherwise only grows."""
        with self._lock:
            self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        self._writer.conn.close()
