"""The generate_record read model: FooocusAPI's history table, a positioned consumer of the log.

`ReadModel` is what the server uses: the writer (`apply`, `catch_up`, `rebuild`) and the queries
(`get`, `history`, ...). `apply` writes a batch of events and the seq it reached in one transaction,
so the table and its position never disagree; on start it catches up from that position, and
`rebuild` replays the whole log into it (the audit: same log, same table). What each event does to
a row is decided once, in record_changes; status changes follow tasks.status.

Two backends: `SqliteReadModel` (this node's own table in its data dir, the default) and
projections.postgres_records (`--read-model postgresql://...`, one table shared by API nodes).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from sqlite_utils import Database

from fooocus_es.events.log import EventLog, pages
from fooocus_es.events.sqlite import BUSY_TIMEOUT_S, ThreadReaders, connect, default_migrations_dir, migrate
from fooocus_es.events.types import Envelope, Event
from fooocus_es.projections.record_changes import CURRENT_SQL, Current, change_for, statement

COLUMNS = (
    "id", "task_id", "req_params", "in_queue_mills", "start_mills", "finish_mills", "task_status",
    "progress", "webhook_url", "result", "error", "notes", "wire",
)  # fmt: skip
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM generate_record"
POSITION = "generate_record"
_CURRENT = CURRENT_SQL.format(mark="?")
POSTGRES_SCHEMES = ("postgresql", "postgres")
READ_MODEL_FLAG = "--read-model (FOOOCUS_ES_READ_MODEL_URL)"


class ReadModelUnavailable(ConnectionError):
    """A networked read model (PostgreSQL) did not answer: a storage fault of kind "unreachable",
    so the follower retries its batch and the API answers 503 (ops/storage.py, api/errors.py)."""


@runtime_checkable  # Litestar checks an injected dependency against its annotation
class ReadModel(Protocol):
    """The history table: its writer, fed from the log in order, and its queries (rows as dicts)."""

    def position(self) -> int: ...
    def apply(self, envelopes: Sequence[Envelope]) -> None: ...
    def catch_up(self, log: EventLog) -> int: ...
    def rebuild(self, log: EventLog) -> int: ...
    def close(self) -> None: ...

    def get(self, task_id: str) -> dict[str, Any] | None: ...
    def history(self, *, page: int, page_size: int, before_id: int | None = None) -> list[dict[str, Any]]: ...
    def history_in_range(self, start_ms: int, end_ms: int, batch: int = 200) -> Iterator[list[dict[str, Any]]]: ...
    def ended_in_range(self, start_ms: int, end_ms: int) -> list[dict[str, Any]]: ...
    def all_rows(self) -> list[tuple[Any, ...]]: ...
    def unfinished(self) -> list[dict[str, Any]]: ...
    def ended_count(self) -> int: ...
    def last_task_id(self) -> str | None: ...


def check_read_model_url(url: str) -> None:
    """"" (SQLite in the data dir) or postgresql://...; anything else is refused before start-up."""
    if url and urlsplit(url).scheme not in POSTGRES_SCHEMES:
        raise ValueError(
            f"{READ_MODEL_FLAG} {redacted(url)!r}: expected postgresql://USER@HOST:PORT/DATABASE,"
            " or nothing for SQLite in the data dir"
        )


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def open_read_model(url: str, db_path: Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> ReadModel:
    """The read model `url` names: "" for SQLite at `db_path`, else a shared PostgreSQL database."""
    check_read_model_url(url)
    if not url:
        return SqliteReadModel(db_path, busy_timeout_s=busy_timeout_s)
    from fooocus_es.projections.postgres_records import PostgresReadModel  # psycopg only when asked for

    return PostgresReadModel(url)


class SqliteReadModel:
    """The table in a SQLite file: one writer connection under a lock, a read connection per thread."""

    def __init__(self, path: Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = connect(path, busy_timeout_s=busy_timeout_s)
        # The schema is the log's migrations: the same file on one machine (applied once, whoever
        # opens it first); in a fleet the log is elsewhere and this file holds only the read side.
        migrate(self._writer, default_migrations_dir())
        self._lock = threading.Lock()
        self._readers = ThreadReaders(path)

    def reader(self) -> Database:
        """This thread's read-only connection, for the queries below (history, get, ...)."""
        return self._readers.get()

    def position(self) -> int:
        with self._lock:
            return position_of(self._writer, POSITION)

    def apply(self, envelopes: Sequence[Envelope]) -> None:
        """Apply events after the position (older ones are skipped: a replayed batch is a no-op)."""
        with self._lock, self._writer.conn:
            self._writer.conn.execute("BEGIN IMMEDIATE")
            done = position_of(self._writer, POSITION)
            fresh = [envelope for envelope in envelopes if envelope.seq > done]
            for envelope in fresh:
                apply(self._writer, envelope.seq, envelope.event)
            if fresh:
                set_position(self._writer, POSITION, fresh[-1].seq)

    def catch_up(self, log: EventLog) -> int:
        """Apply what the log has beyond the position; returns how many events that was."""
        return catch_up(self, log)

    def rebuild(self, log: EventLog) -> int:
        """Empty the table and apply the whole log, in one transaction."""
        with self._lock, self._writer.conn:
            self._writer.conn.execute("BEGIN IMMEDIATE")
            count = rebuild(self._writer, ((envelope.seq, envelope.event) for envelope in log.read()))
            set_position(self._writer, POSITION, log.last_seq())
        return count

    def close(self) -> None:
        self._writer.conn.close()

    # -- queries (this thread's read connection) ------------------------------------------------
    def get(self, task_id: str) -> dict[str, Any] | None:
        return get(self.reader(), task_id)

    def history(self, *, page: int, page_size: int, before_id: int | None = None) -> list[dict[str, Any]]:
        return history(self.reader(), page=page, page_size=page_size, before_id=before_id)

    def history_in_range(self, start_ms: int, end_ms: int, batch: int = 200) -> Iterator[list[dict[str, Any]]]:
        return history_in_range(self.path, start_ms, end_ms, batch)

    def ended_in_range(self, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        return ended_in_range(self.reader(), start_ms, end_ms)

    def all_rows(self) -> list[tuple[Any, ...]]:
        return all_rows(self.reader())

    def unfinished(self) -> list[dict[str, Any]]:
        return unfinished(self.reader())

    def ended_count(self) -> int:
        return ended_count(self.reader())

    def last_task_id(self) -> str | None:
        return last_task_id(self.reader())


def catch_up(model: ReadModel, log: EventLog) -> int:
    """Apply what the log has beyond the model's position, a page per transaction; how many events."""
    count = 0
    for page in pages(log.read(after_seq=model.position())):
        model.apply(page)
        count += len(page)
    return count


def position_of(db: Database, name: str) -> int:
    row = db.execute("SELECT seq FROM consumer_positions WHERE name = ?", (name,)).fetchone()
    return int(row[0]) if row else 0


def set_position(db: Database, name: str, seq: int) -> None:
    db.execute(
        "INSERT INTO consumer_positions (name, seq) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
        (name, seq),
    )


def apply(db: Database, seq: int, event: Event) -> None:
    """Apply one event (inside the caller's transaction): record_changes decides, SQLite runs it."""
    conn = db.conn

    def load(task_id: str) -> Current | None:
        row = conn.execute(_CURRENT, (task_id,)).fetchone()
        return Current(row[0], bool(row[1]), row[2]) if row else None

    change = change_for(seq, event, load)
    if change is not None:
        sql, rows = statement(change, "?")
        for params in rows:  # one row, or one per deleted task
            conn.execute(sql, params)


def rebuild(db: Database, events: Iterable[tuple[int, Event]]) -> int:
    """Empty the table and apply every event in order (call inside one transaction)."""
    db.conn.execute("DELETE FROM generate_record")
    count = 0
    for seq, event in events:
        apply(db, seq, event)
        count += 1
    return count


def row_to_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    record = dict(zip(COLUMNS, row, strict=True))
    record["req_params"] = json.loads(record["req_params"])
    record["result"] = json.loads(record["result"] or "[]")
    record["error"] = json.loads(record["error"]) if record["error"] else None
    record["notes"] = json.loads(record["notes"] or "null") or []
    return record


def get(db: Database, task_id: str) -> dict[str, Any] | None:
    row = db.execute(f"{_SELECT} WHERE task_id = ?", (task_id,)).fetchone()
    return row_to_dict(row) if row else None


_ENDED = "finish_mills IS NOT NULL"  # ended is finish_mills, not a status: `skip` is also a running task's


def history(db: Database, *, page: int, page_size: int, before_id: int | None = None) -> list[dict[str, Any]]:
    """One page of ended tasks, newest first.

    `before_id` is the keyset cursor (the last page's smallest id: no rows skipped at all); a page
    number skips `page * page_size` entries of the partial index generate_record_ended, never rows.
    """
    if before_id is not None:
        rows = db.execute(
            f"{_SELECT} WHERE {_ENDED} AND id < ? ORDER BY id DESC LIMIT ?", (before_id, page_size)
        ).fetchall()
    else:
        rows = db.execute(
            f"{_SELECT} WHERE id IN (SELECT id FROM generate_record INDEXED BY generate_record_ended"
            f" WHERE {_ENDED} ORDER BY id DESC LIMIT ? OFFSET ?) ORDER BY id DESC",
            (page_size, page * page_size),
        ).fetchall()
    return [row_to_dict(row) for row in rows]


def history_in_range(path: Path, start_ms: int, end_ms: int, batch: int = 200) -> Iterator[list[dict[str, Any]]]:
    """Every ended task queued in [start_ms, end_ms], newest first, `batch` rows at a time.

    Its own connection and one read transaction (a consistent snapshot under WAL), so a range of
    100k long records is never held at once; the caller may pull batches from different threads
    one after another (the connection is not thread-bound), never from two at once.
    """
    db = connect(path, readonly=True)
    try:
        cursor = db.execute(
            f"{_SELECT} WHERE {_ENDED} AND in_queue_mills BETWEEN ? AND ? ORDER BY id DESC", (start_ms, end_ms)
        )
        while rows := cursor.fetchmany(batch):
            yield [row_to_dict(row) for row in rows]
    finally:
        db.close()


def ended_in_range(db: Database, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
    """Every ended task queued in the range (for a deletion, which needs all of their ids at once)."""
    rows = db.execute(
        f"{_SELECT} WHERE {_ENDED} AND in_queue_mills BETWEEN ? AND ? ORDER BY id DESC", (start_ms, end_ms)
    ).fetchall()
    return [row_to_dict(row) for row in rows]


def all_rows(db: Database) -> list[tuple[Any, ...]]:
    """The whole table in id order: what the replay audit compares."""
    return db.execute(f"{_SELECT} ORDER BY id").fetchall()


def unfinished(db: Database) -> list[dict[str, Any]]:
    """Tasks the log has not ended, in queue order: what start-up recovery works on."""
    rows = db.execute(f"{_SELECT} WHERE finish_mills IS NULL ORDER BY id").fetchall()
    return [row_to_dict(row) for row in rows]


def ended_count(db: Database) -> int:
    """How many tasks have ended (Fooocus-API's job-queue finished_size)."""
    return db.execute("SELECT COUNT(*) FROM generate_record WHERE finish_mills IS NOT NULL").fetchone()[0]


def last_task_id(db: Database) -> str | None:
    """The most recently queued task (Fooocus-API's job-queue last_job_id)."""
    row = db.execute("SELECT task_id FROM generate_record ORDER BY id DESC LIMIT 1").fetchone()
    return row[0] if row else None
