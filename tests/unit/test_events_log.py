"""The SQLite log's schema and migrations, the read model, its position and replay, on real SQLite files
and (the read model) on a real PostgreSQL: each read-model test runs on both backends.

The log's behaviour as an EventLog is in tests/contract/test_event_log.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fooocus_es.events.sqlite import SqliteEventLog, default_migrations_dir, migrate
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
from fooocus_es.projections.records import ReadModel, SqliteReadModel

OpenModel = Callable[[SqliteEventLog], ReadModel]


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


@pytest.fixture(params=["sqlite", "postgresql"])
def open_model(request: pytest.FixtureRequest) -> Iterator[OpenModel]:
    """Opens the read model of a log: SQLite in the log's file, or one PostgreSQL database per test
    (opened again, it is the same table: a restarted node, or another node of the fleet)."""
    opened: list[ReadModel] = []
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else ""

    def open_for(log: SqliteEventLog) -> ReadModel:
        if url:
            from fooocus_es.projections.postgres_records import PostgresReadModel

            model: ReadModel = PostgresReadModel(url)
        else:
            model = SqliteReadModel(log.path)
        opened.append(model)
        return model

    yield open_for
    for model in opened:
        model.close()


def caught_up(model: ReadModel, log: SqliteEventLog) -> ReadModel:
    model.catch_up(log)
    return model


def test_migrations_are_idempotent_and_versioned(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    SqliteEventLog(path).close()
    log = SqliteEventLog(path)  # second start: nothing re-applied
    newest = int(max(default_migrations_dir().glob("[0-9]*.sql")).name[:4])
    assert newest >= 5  # 0005 is the history index
    assert log.reader().execute("PRAGMA user_version").fetchone()[0] == newest
    assert migrate(log._writer, default_migrations_dir()) == newest


def test_a_version_3_log_gets_per_task_versions_and_positions_at_its_end(tmp_path: Path) -> None:
    """Upgrading a database written before 0004: versions numbered per task, consumers current."""
    path = tmp_path / "db.sqlite3"
    old = tmp_path / "old-migrations"
    old.mkdir()
    for migration in sorted((Path(__file__).resolve().parents[2] / "migrations").glob("000[123]_*.sql")):
        (old / migration.name).write_text(migration.read_text())
    log = SqliteEventLog(path, migrations_dir=old)
    for task_id, event_type in [("a", "TaskQueued"), ("b", "TaskQueued"), ("a", "TaskStarted"), ("a", "TaskCancelled")]:
        log._writer.execute(
            "INSERT INTO task_events (task_id, type, at_ms, payload) VALUES (?, ?, 1, ?)",
            (task_id, event_type, f'{{"type":"{event_type}","task_id":"{task_id}","at_ms":1,"params":{{}}}}'),
        )
    log.close()
    log = SqliteEventLog(path)
    rows = log.reader().execute("SELECT task_id, version FROM task_events ORDER BY seq").fetchall()
    assert rows == [("a", 1), ("b", 1), ("a", 2), ("a", 3)]
    assert log.version("a") == 3 and log.version("b") == 1 and log.version("none") == 0
    assert SqliteReadModel(path).position() == 4  # the old table was written in the append transaction


def test_admission_notes_and_wire_are_kept_alongside_the_engines_notes(tmp_path: Path, open_model: OpenModel) -> None:
    log = SqliteEventLog(tmp_path / "db.sqlite3")
    model = open_model(log)
    note = "ignored fields this server does not know: api_name"
    log.append(TaskQueued(task_id="t", at_ms=1, params={}, notes=[note], wire="fooocus-api/text-to-image"))
    assert caught_up(model, log).get("t")["notes"] == [note]
    log.append(TaskStarted(task_id="t", at_ms=2))
    log.append(TaskFinished(task_id="t", at_ms=3, result=[], notes=["style 'x' is not installed; skipped"]))
    record = caught_up(model, log).get("t")
    assert record["notes"] == [note, "style 'x' is not installed; skipped"]
    assert record["wire"] == "fooocus-api/text-to-image"
    log.append(queued("older"))  # events written before these fields existed decode with defaults
    older = caught_up(model, log).get("older")
    assert older["wire"] == "" and older["notes"] == []


def test_the_read_model_keeps_its_position_with_its_rows(tmp_path: Path, open_model: OpenModel) -> None:
    log = SqliteEventLog(tmp_path / "db.sqlite3")
    model = open_model(log)
    seqs = [log.append(queued("a")), log.append(TaskStarted(task_id="a", at_ms=2))]
    assert model.catch_up(log) == 2 and model.position() == seqs[-1]
    assert model.catch_up(log) == 0  # nothing new
    model.apply(list(log.read()))  # a batch delivered twice (a restart mid-batch) is a no-op
    assert model.get("a")["task_status"] == "running"
    log.append(TaskFinished(task_id="a", at_ms=3, result=["outputs/x.png"]))
    restarted = open_model(log)  # a new process: it resumes from the stored position
    assert restarted.catch_up(log) == 1
    assert model.get("a")["task_status"] == "finished"


def test_read_model_follows_every_lifecycle(tmp_path: Path, open_model: OpenModel) -> None:
    log = SqliteEventLog(tmp_path / "db.sqlite3")
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
        queued("skipping", 65),
        TaskStarted(task_id="skipping", at_ms=66),
        TaskSkipped(task_id="skipping", at_ms=67, image_index=0),  # still running: not history
    ]:
        log.append(event)
    model = caught_up(open_model(log), log)
    status = {
        task: model.get(task)["task_status"]
        for task in ("ok", "skipped", "stopped", "failed", "cancelled", "waiting", "skipping")
    }
    assert status == {
        "ok": "finished",
        "skipped": "skip",
        "stopped": "stop",
        "failed": "failed",
        "cancelled": "cancelled",
        "waiting": "pending",
        "skipping": "skip",
    }
    ok = model.get("ok")
    assert (
        ok["result"] == ["outputs/d/a.png"]
        and ok["progress"] == 100
        and ok["start_mills"] == 11
        and ok["finish_mills"] == 13
    )
    assert model.get("failed")["error"] == {"type": "ModelMissing", "message": "no file"}
    history = model.history(page=0, page_size=10)
    assert [r["task_id"] for r in history] == [
        "cancelled",
        "failed",
        "stopped",
        "skipped",
        "ok",
    ]  # newest first, nothing that has not ended
    assert [r["task_id"] for r in model.history(page=1, page_size=2)] == [
        "stopped",
        "skipped",
    ]
    first_two = model.history(page=0, page_size=2)
    keyset = model.history(page=0, page_size=2, before_id=first_two[-1]["id"])
    assert [r["task_id"] for r in keyset] == ["stopped", "skipped"]  # the same page as page=1, by cursor
    in_range = [row for batch in model.history_in_range(15, 45, batch=2) for row in batch]
    assert [r["task_id"] for r in in_range] == ["failed", "stopped", "skipped"]
    assert [len(b) for b in model.history_in_range(15, 45, batch=2)] == [2, 1]
    assert [r["task_id"] for r in model.unfinished()] == ["waiting", "skipping"]

    log.append(TasksDeleted(task_id="del-1", at_ms=70, deleted_task_ids=["ok", "failed"], start_ms=0, end_ms=70))
    model.catch_up(log)
    assert model.get("ok") is None and model.get("failed") is None

    assert model.ended_count() == 3 and model.last_task_id() == "skipping"
    assert [r["task_id"] for r in model.ended_in_range(15, 45)] == ["stopped", "skipped"]

    before = model.all_rows()
    assert before == caught_up(SqliteReadModel(tmp_path / "reference.sqlite3"), log).all_rows()  # either backend
    assert model.rebuild(log) == len(list(log.read()))
    assert model.all_rows() == before  # the audit: same log, same table
    assert model.position() == log.last_seq()


def test_a_missing_migrations_folder_is_an_error_not_an_empty_schema(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        SqliteEventLog(tmp_path / "db.sqlite3", migrations_dir=tmp_path / "nowhere")
