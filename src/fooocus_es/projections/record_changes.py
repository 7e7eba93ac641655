"""What one event does to the generate_record table, decided once for every read model backend.

`change_for` turns an event (and the task's current row, loaded only when the event needs it) into
one change: a row to insert, columns to update, or rows to delete. The SQLite and PostgreSQL read
models only run `statement(change, mark)`, so both tables move through the same states and hold
the same values (JSON columns are this module's text, byte for byte).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence

import msgspec

from fooocus_es.events.types import (
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

Value = int | float | str | None


class Current(msgspec.Struct, frozen=True):
    """The part of a task's row a transition depends on."""

    status: TaskStatus | None
    ended: bool  # finish_mills is set: `skip` is also a running task's status
    notes: str | None  # the notes column's JSON


# The current row, in the order Current takes it; `{mark}` is the backend's placeholder (PostgreSQL
# reads a batch's rows at once, the same columns, and moves them on with `rows_after`).
CURRENT_SQL = "SELECT task_status, finish_mills IS NOT NULL, notes FROM generate_record WHERE task_id = {mark}"


class InsertRecord(msgspec.Struct, frozen=True):
    """A task's row, from its TaskQueued (the fields are the columns, in order)."""

    id: int  # the TaskQueued's seq, so a rebuild gives the same ids
    task_id: str
    req_params: str
    in_queue_mills: int
    task_status: TaskStatus
    progress: int
    webhook_url: str
    result: str
    notes: str | None
    wire: str


class UpdateRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The columns an event sets on its task's row; UNSET ones are left as they are."""

    task_id: str
    task_status: TaskStatus
    start_mills: int | msgspec.UnsetType = msgspec.UNSET
    finish_mills: int | msgspec.UnsetType = msgspec.UNSET
    progress: int | msgspec.UnsetType = msgspec.UNSET
    result: str | msgspec.UnsetType = msgspec.UNSET
    notes: str | None | msgspec.UnsetType = msgspec.UNSET
    error: str | None | msgspec.UnsetType = msgspec.UNSET


class DeleteRecords(msgspec.Struct, frozen=True):
    task_ids: tuple[str, ...]


Change = InsertRecord | UpdateRecord | DeleteRecords


def change_for(seq: int, event: Event, load: Callable[[str], Current | None]) -> Change | None:
    """The change `event` (at `seq`) makes, or None; `load` reads a task's current row."""
    if isinstance(event, TaskProgress):
        return None  # progress is live-only state: FooocusAPI never writes it to the table
    if isinstance(event, TasksDeleted):
        return DeleteRecords(tuple(event.deleted_task_ids))
    row = load(event.task_id)
    status = next_status(row.status if row else None, event, ended=bool(row and row.ended))
    if status is None:
        return None  # not a transition (the log's terminal guard makes this rare: rows older than it)
    task_id = event.task_id
    match event:
        case TaskQueued():
            notes = json.dumps(event.notes) if event.notes else None
            return InsertRecord(
                seq, task_id, json.dumps(event.params), event.at_ms, status, 0, event.webhook_url, "[]", notes,
                event.wire,
            )  # fmt: skip
        case TaskStarted():
            return UpdateRecord(task_id=task_id, start_mills=event.at_ms, task_status=status)
        case TaskSkipped():
            # FooocusAPI reports a task with a skipped image as status "skip" when it ends.
            return UpdateRecord(task_id=task_id, task_status=status)
        case TaskFinished():
            notes_list = [*(json.loads(row.notes or "null") or []), *event.notes] if row else list(event.notes)
            return UpdateRecord(
                task_id=task_id, finish_mills=event.at_ms, progress=100, result=json.dumps(event.result),
                notes=json.dumps(notes_list) if notes_list else None, task_status=status,
            )  # fmt: skip
        case TaskStopped():
            return _end(task_id, event.at_ms, status, event.result, None)
        case TaskFailed():
            error = {"type": event.error_type, "message": event.message}
            return _end(task_id, event.at_ms, status, event.result, error)
        case TaskCancelled():
            return _end(task_id, event.at_ms, status, [], None)
    return None


def rows_after(rows: dict[str, Current | None], change: Change) -> None:
    """Move `rows` (task id -> its row's Current) past `change`: for a backend that loads a batch's
    rows in one query and decides the batch's changes before it writes any."""
    match change:
        case InsertRecord():
            rows[change.task_id] = Current(change.task_status, False, change.notes)
        case UpdateRecord():
            row = rows.get(change.task_id)
            ended = bool(row and row.ended) or change.finish_mills is not msgspec.UNSET
            notes = row.notes if row and change.notes is msgspec.UNSET else change.notes
            rows[change.task_id] = Current(change.task_status, ended, notes)
        case DeleteRecords():
            for task_id in change.task_ids:
                rows[task_id] = None


def _end(task_id: str, at_ms: int, status: TaskStatus, result: list[str], error: dict[str, str] | None) -> UpdateRecord:
    return UpdateRecord(
        task_id=task_id, finish_mills=at_ms, task_status=status, result=json.dumps(result),
        error=json.dumps(error) if error else None,
    )  # fmt: skip


_INSERT_COLUMNS = InsertRecord.__struct_fields__
_UPDATE_COLUMNS = UpdateRecord.__struct_fields__[1:]  # all but task_id


def statement(change: Change, mark: str) -> tuple[str, list[Sequence[Value]]]:
    """The change as SQL with `mark` placeholders ("?" for SQLite, "%s" for psycopg) and its
    parameter rows (one execution each)."""
    match change:
        case InsertRecord():
            return _insert_sql(mark), [msgspec.structs.astuple(change)]
        case UpdateRecord():
            pairs = [(name, value) for name in _UPDATE_COLUMNS if (value := getattr(change, name)) is not msgspec.UNSET]
            sql = _update_sql(tuple(name for name, _ in pairs), mark)
            return sql, [(*(value for _, value in pairs), change.task_id)]
        case DeleteRecords():
            return f"DELETE FROM generate_record WHERE task_id = {mark}", [(task_id,) for task_id in change.task_ids]


# The SQL text of each statement shape, built once (a handful of shapes: one per kind of event).
@functools.cache
def _insert_sql(mark: str) -> str:
    marks = ", ".join([mark] * len(_INSERT_COLUMNS))
    return f"INSERT INTO generate_record ({', '.join(_INSERT_COLUMNS)}) VALUES ({marks})"


@functools.cache
def _update_sql(columns: tuple[str, ...], mark: str) -> str:
    return f"UPDATE generate_record SET {', '.join(f'{name} = {mark}' for name in columns)} WHERE task_id = {mark}"
