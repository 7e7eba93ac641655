"""The event log, the store's ordering, the read model and replay — on real SQLite files."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from fooocus_es.events.log import EventLog, migrate
from fooocus_es.events.store import EventStore
from fooocus_es.events.types import (
    TaskCancelled,
    TaskFailed,
    TaskFinished,
    TaskProgress,
    TaskQueued,
    TasksDeleted,
    TaskSkipped,
    TaskStarted,
    TaskStopped,
    decode_event,
    encode_for_log,
)
from fooocus_es.projections import records


def queued(task_id: str, at_ms: int = 1000) -> TaskQueued:
    return TaskQueued(task_id=task_id, at_ms=at_ms, params={"prompt": task_id}, webhook_url="")


def test_events_round_trip_and_previews_are_not_logged() -> None:
    event = TaskProgress(
        task_id="t", at_ms=5, percent=40, message="Sampling", step=2, preview="data:image/jpeg;base64,AAA"
    )
    stored = decode_event(encode_for_log(event))
    assert isinstance(stored, TaskProgress)
    assert stored.preview is None and stored.percent == 40 and stored.step == 2
    for other in (
        queued("a"),
        TaskFinished(task_id="a", at_ms=1, result=["outputs/x.png"]),
        TaskCancelled(task_id="a", at_ms=2),
    ):
        assert decode_event(encode_for_log(other)) == other


def test_append_assigns_increasing_seqs_and_reads_back_in_order(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "db.sqlite3")
    seqs = [log.append(queued(f"t{i}")) for i in range(5)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert [event.task_id for _, event in log.read()] == [f"t{i}" for i in range(5)]
    assert [event.task_id for _, event in log.read(task_id="t3")] == ["t3"]


def test_migrations_are_idempotent_and_versioned(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    EventLog(path).close()
    log = EventLog(path)  # second start: nothing re-applied
    assert log.reader().execute("PRAGMA user_version").fetchone()[0] == 3
    assert migrate(log._writer, Path(__file__).resolve().parents[2] / "migrations") == 3


def test_admission_notes_and_wire_are_kept_alongside_the_engines_notes(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "db.sqlite3")
    store = EventStore(log)
    note = "ignored fields this server does not know: api_name"
    store.emit(TaskQueued(task_id="t", at_ms=1, params={}, notes=[note], wire="fooocus-api/text-to-image"))
    assert records.get(log.reader(), "t")["notes"] == [note]
    store.emit(TaskStarted(task_id="t", at_ms=2))
    store.emit(TaskFinished(task_id="t", at_ms=3, result=[], notes=["style 'x' is not installed; skipped"]))
    record = records.get(log.reader(), "t")
    assert record["notes"] == [note, "style 'x' is not installed; skipped"]
    assert record["wire"] == "fooocus-api/text-to-image"
    store.emit(queued("older"))  # events written before these fields existed decode with defaults
    assert records.get(log.reader(), "older")["wire"] == "" and records.get(log.reader(), "older")["notes"] == []


def test_a_failing_projection_rolls_the_event_back(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "db.sqlite3")
    store = EventStore(log)
    store.emit(queued("dup"))
    with pytest.raises(sqlite3.IntegrityError):
        store.emit(queued("dup"))  # generate_record.task_id is UNIQUE: the append must not stay either
    assert [event.task_id for _, event in log.read()] == ["dup"]


def test_read_model_follows_every_lifecycle(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "db.sqlite3")
    store = EventStore(log)
    for event in [
        queued("ok", 10),
        TaskStarted(task_id="ok", at_ms=11),
        TaskProgress(task_id="ok", at_ms=12, percent=50, message="m"),
        TaskFinished(task_id="ok", at_ms=13, result=["outputs/d/a.png"]),
        queued("skipped", 20),
        TaskStarted(task_id="skipped", at_ms=21),
        TaskSkipped(task_id="skipped", at_ms=22, image_index=0),
        TaskFinished(task_id="skipped", at_ms=23, result=[]),
        queued("stopped", 30),
        TaskStarted(task_id="stopped", at_ms=31),
        TaskStopped(task_id="stopped", at_ms=32, result=["outputs/d/b.png"]),
        queued("failed", 40),
        TaskStarted(task_id="failed", at_ms=41),
        TaskFailed(task_id="failed", at_ms=42, error_type="ModelMissing", message="no file"),
        queued("cancelled", 50),
        TaskCancelled(task_id="cancelled", at_ms=51),
        queued("waiting", 60),
    ]:
        store.emit(event)
    db = log.reader()
    status = {
        task: records.get(db, task)["task_status"]
        for task in ("ok", "skipped", "stopped", "failed", "cancelled", "waiting")
    }
    assert status == {
        "ok": "finished",
        "skipped": "skip",
        "stopped": "stop",
        "failed": "failed",
        "cancelled": "cancelled",
        "waiting": "pending",
    }
    ok = records.get(db, "ok")
    assert (
        ok["result"] == ["outputs/d/a.png"]
        and ok["progress"] == 100
        and ok["start_mills"] == 11
        and ok["finish_mills"] == 13
    )
    assert records.get(db, "failed")["error"] == {"type": "ModelMissing", "message": "no file"}
    history = records.history(db, page=0, page_size=10, start_ms=None, end_ms=None)
    assert [r["task_id"] for r in history] == [
        "cancelled",
        "failed",
        "stopped",
        "skipped",
        "ok",
    ]  # newest first, no pending
    assert [r["task_id"] for r in records.history(db, page=1, page_size=2, start_ms=None, end_ms=None)] == [
        "stopped",
        "skipped",
    ]
    assert [r["task_id"] for r in records.history(db, page=0, page_size=10, start_ms=15, end_ms=45)] == [
        "failed",
        "stopped",
        "skipped",
    ]
    assert [r["task_id"] for r in records.unfinished(db)] == ["waiting"]

    store.emit(TasksDeleted(task_id="del-1", at_ms=70, deleted_task_ids=["ok", "failed"], start_ms=0, end_ms=70))
    assert records.get(db, "ok") is None and records.get(db, "failed") is None

    before = records.all_rows(db)
    log.writer_transaction(lambda w: records.rebuild(w, log.read()))
    assert records.all_rows(log.reader()) == before  # the audit: same log, same table


def test_concurrent_emitters_publish_in_seq_order(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "db.sqlite3")
    seen: list[int] = []
    store = EventStore(log)
    original = log.append

    def append(event, project=None, after_commit=None):  # record publish order as the store does it
        return original(event, project, lambda seq: (seen.append(seq), after_commit and after_commit(seq)))

    log.append = append  # type: ignore[method-assign]

    def worker(prefix: str) -> None:
        for i in range(200):
            store.emit(queued(f"{prefix}{i}"))

    threads = [threading.Thread(target=worker, args=(p,)) for p in "abc"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 600 and seen == sorted(seen)


def test_a_missing_migrations_folder_is_an_error_not_an_empty_schema(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        EventLog(tmp_path / "db.sqlite3", migrations_dir=tmp_path / "nowhere")
