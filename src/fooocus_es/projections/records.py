"""The generate_record read model: FooocusAPI's history table, a positioned consumer of the log.

`ReadModel.apply` writes a batch of events and the seq it reached in one transaction, so the table
and its position never disagree; on start it catches up from that position, and `rebuild` replays
the whole log into it (the audit: same log, same table). Status changes follow tasks.status.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from fooocus_es.events.log import EventLog, pages
from fooocus_es.events.sqlite import BUSY_TIMEOUT_S, ThreadReaders, connect, default_migrations_dir, migrate
from fooocus_es.events.types import (
    Envelope,
    Event,
    TaskCancelled,
    TaskFailed,
    TaskFinished,
    TaskProgress,
    TaskQueued,
    TasksDeleted,
    TaskSkipped,
    TaskStarted,
    TaskStopped,
)
from fooocus_es.tasks.status import TaskStatus, next_status

COLUMNS = (
    "id", "task_id", "req_params", "in_queue_mills", "start_mills", "finish_mills", "task_status",
    "progress", "webhook_url", "result", "error", "notes", "wire",
)  # fmt: skip
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM generate_record"
POSITION = "generate_record"


class ReadModel:
    """The table's writer: applies the log in order and keeps its position beside the rows."""

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
        count = 0
        for page in pages(log.read(after_seq=self.position())):
            self.apply(page)
            count += len(page)
        return count

    def rebuild(self, log: EventLog) -> int:
        """Empty the table and apply the whole log, in one transaction."""
        with self._lock, self._writer.conn:
            self._writer.conn.execute("BEGIN IMMEDIATE")
            count = rebuild(self._writer, ((envelope.seq, envelope.event) for envelope in log.read()))
            set_position(self._writer, POSITION, log.last_seq())
        return count

    def close(self) -> None:
        self._writer.conn.close()


def position_of(db: Database, name: str) -> int:
    row = db.execute("SELECT seq FROM consumer_positions WHERE name = ?", (name,)).fetchone()
    return int(row[0]) if row else 0


def set_position(db: Database, name: str, seq: int) -> None:
    db.execute(
        "INSERT INTO consumer_positions (name, seq) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
        (name, seq),
    )


def apply(db: Database, seq: int, event: Event) -> None:
    """Apply one event (inside the caller's transaction)."""
    conn = db.conn
    if isinstance(event, TaskProgress):
        return  # progress is live-only state: FooocusAPI never writes it to the table
    if isinstance(event, TasksDeleted):
        conn.executemany(
            "DELETE FROM generate_record WHERE task_id = ?", [(task_id,) for task_id in event.deleted_task_ids]
        )
        return
    row = conn.execute(
        "SELECT task_status, finish_mills IS NOT NULL, notes FROM generate_record WHERE task_id = ?", (event.task_id,)
    ).fetchone()
    current: TaskStatus | None = row[0] if row else None
    status = next_status(current, event, ended=bool(row and row[1]))
    if status is None:
        return  # not a transition (the log's terminal guard makes this rare: rows older than it)
    match event:
        case TaskQueued():
            conn.execute(
                "INSERT INTO generate_record (id, task_id, req_params, in_queue_mills, task_status, progress,"
                " webhook_url, result, notes, wire) VALUES (?, ?, ?, ?, ?, 0, ?, '[]', ?, ?)",
                (
                    seq, event.task_id, json.dumps(event.params), event.at_ms, status, event.webhook_url,
                    json.dumps(event.notes) if event.notes else None, event.wire,
                ),  # fmt: skip
            )
        case TaskStarted():
            conn.execute(
                "UPDATE generate_record SET start_mills = ?, task_status = ? WHERE task_id = ?",
                (event.at_ms, status, event.task_id),
            )
        case TaskSkipped():
            # FooocusAPI reports a task with a skipped image as status "skip" when it ends.
            conn.execute("UPDATE generate_record SET task_status = ? WHERE task_id = ?", (status, event.task_id))
        case TaskFinished():
            notes = [*(json.loads(row[2] or "null") or []), *event.notes] if row else list(event.notes)
            conn.execute(
                "UPDATE generate_record SET finish_mills = ?, progress = 100, result = ?, notes = ?, task_status = ?"
                " WHERE task_id = ?",
                (event.at_ms, json.dumps(event.result), json.dumps(notes) if notes else None, status, event.task_id),
            )
        case TaskStopped():
            _end(db, event.task_id, event.at_ms, status, event.result, None)
        case TaskFailed():
            error = {"type": event.error_type, "message": event.message}
            _end(db, event.task_id, event.at_ms, status, event.result, error)
        case TaskCancelled():
            _end(db, event.task_id, event.at_ms, status, [], None)


def _end(db: Database, task_id: str, at_ms: int, status: str, result: list[str], error: dict | None) -> None:
    db.conn.execute(
        "UPDATE generate_record SET finish_mills = ?, task_status = ?, result = ?, error = ? WHERE task_id = ?",
        (at_ms, status, json.dumps(result), json.dumps(error) if error else None, task_id),
    )


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
