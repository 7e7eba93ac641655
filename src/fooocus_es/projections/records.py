"""The generate_record read model: FooocusAPI's history table, maintained from events.

`apply` runs inside the event's append transaction, so the table is never behind the log, and
`rebuild` replays the whole log into it (the audit: same log, same table).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlite_utils import Database

from fooocus_es.events.types import (
    Event,
    TaskCancelled,
    TaskFailed,
    TaskFinished,
    TaskQueued,
    TasksDeleted,
    TaskSkipped,
    TaskStarted,
    TaskStopped,
)

COLUMNS = (
    "id", "task_id", "req_params", "in_queue_mills", "start_mills", "finish_mills", "task_status",
    "progress", "webhook_url", "result", "error", "notes", "wire",
)  # fmt: skip
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM generate_record"


def apply(db: Database, seq: int, event: Event) -> None:
    conn = db.conn
    match event:
        case TaskQueued():
            conn.execute(
                "INSERT INTO generate_record (id, task_id, req_params, in_queue_mills, task_status, progress,"
                " webhook_url, result, notes, wire) VALUES (?, ?, ?, ?, 'pending', 0, ?, '[]', ?, ?)",
                (
                    seq, event.task_id, json.dumps(event.params), event.at_ms, event.webhook_url,
                    json.dumps(event.notes) if event.notes else None, event.wire,
                ),  # fmt: skip
            )
        case TaskStarted():
            conn.execute(
                "UPDATE generate_record SET start_mills = ?, task_status = 'running' WHERE task_id = ?",
                (event.at_ms, event.task_id),
            )
        case TaskSkipped():
            # FooocusAPI reports a task with a skipped image as status "skip" when it ends.
            conn.execute("UPDATE generate_record SET task_status = 'skip' WHERE task_id = ?", (event.task_id,))
        case TaskFinished():
            (queued_notes,) = conn.execute(
                "SELECT notes FROM generate_record WHERE task_id = ?", (event.task_id,)
            ).fetchone() or (None,)
            notes = [*(json.loads(queued_notes or "null") or []), *event.notes]
            conn.execute(
                "UPDATE generate_record SET finish_mills = ?, progress = 100, result = ?, notes = ?,"
                " task_status = CASE task_status WHEN 'skip' THEN 'skip' ELSE 'finished' END WHERE task_id = ?",
                (event.at_ms, json.dumps(event.result), json.dumps(notes) if notes else None, event.task_id),
            )
        case TaskStopped():
            _end(db, event.task_id, event.at_ms, "stop", event.result, None)
        case TaskFailed():
            error = {"type": event.error_type, "message": event.message}
            _end(db, event.task_id, event.at_ms, "failed", event.result, error)
        case TaskCancelled():
            _end(db, event.task_id, event.at_ms, "cancelled", [], None)
        case TasksDeleted():
            conn.executemany(
                "DELETE FROM generate_record WHERE task_id = ?", [(task_id,) for task_id in event.deleted_task_ids]
            )
        case _:
            pass  # progress is live-only state: FooocusAPI never writes it to the table


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


def history(
    db: Database,
    *,
    page: int,
    page_size: int,
    start_ms: int | None,
    end_ms: int | None,
    exclude_statuses: tuple[str, ...] = ("pending", "running"),
) -> list[dict[str, Any]]:
    """Ended tasks, newest first. With a time range: every row in it; without: one page."""
    marks = ", ".join("?" for _ in exclude_statuses)
    where, args = f"task_status NOT IN ({marks})", list(exclude_statuses)
    if start_ms is not None and end_ms is not None:
        rows = db.execute(
            f"{_SELECT} WHERE {where} AND in_queue_mills BETWEEN ? AND ? ORDER BY id DESC",
            (*args, start_ms, end_ms),
        ).fetchall()
    else:
        rows = db.execute(
            f"{_SELECT} WHERE {where} ORDER BY id DESC LIMIT ? OFFSET ?", (*args, page_size, page * page_size)
        ).fetchall()
    return [row_to_dict(row) for row in rows]


def ended_in_range(db: Database, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
    return history(db, page=0, page_size=0, start_ms=start_ms, end_ms=end_ms)


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
