"""The shared PostgreSQL read model on a real cluster: API nodes applying the same log at once, its
schema migration, and start-up errors. (The tests it shares with SQLite are in test_events_log.py.)"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from fooocus_es.events.log import pages
from fooocus_es.events.sqlite import SqliteEventLog
from fooocus_es.events.types import (
    TaskCancelled,
    TaskFailed,
    TaskFinished,
    TaskProgress,
    TaskQueued,
    TasksDeleted,
    TaskSkipped,
    TaskStarted,
)
from fooocus_es.ops.storage import classify
from fooocus_es.projections.postgres_records import PostgresReadModel
from fooocus_es.projections.records import ReadModelUnavailable, SqliteReadModel, open_read_model
from fooocus_es.settings import settings_from_env


def _busy_log(path: Path, tasks: int = 60) -> SqliteEventLog:
    """A log with every kind of lifecycle, interleaved as a busy server writes them."""
    log = SqliteEventLog(path)
    for n in range(tasks):
        task_id = f"t{n}"
        log.append(TaskQueued(task_id=task_id, at_ms=1000 + n, params={"prompt": f"p{n}"}, notes=["n"] * (n % 2)))
        if n % 5 == 4:
            log.append(TaskCancelled(task_id=task_id, at_ms=2000 + n))
            continue
        log.append(TaskStarted(task_id=task_id, at_ms=2000 + n))
        log.append(TaskProgress(task_id=task_id, at_ms=2001 + n, percent=50, message="m"))
        if n % 7 == 3:
            log.append(TaskSkipped(task_id=task_id, at_ms=2002 + n, image_index=0))
        if n % 6 == 5:
            log.append(TaskFailed(task_id=task_id, at_ms=3000 + n, error_type="E", message="boom"))
        elif n != tasks - 1:  # the last one is still running
            log.append(TaskFinished(task_id=task_id, at_ms=3000 + n, result=[f"outputs/{n}.png"], notes=["f"]))
    log.append(TasksDeleted(task_id="del", at_ms=9000, deleted_task_ids=["t0", "t1"], start_ms=0, end_ms=1))
    return log


def test_two_nodes_applying_the_same_log_at_once_write_each_task_once(tmp_path: Path, postgres_url: str) -> None:
    log = _busy_log(tmp_path / "db.sqlite3")
    reference = SqliteReadModel(tmp_path / "reference.sqlite3")  # what one node's SQLite gets
    reference.catch_up(log)
    nodes = [PostgresReadModel(postgres_url), PostgresReadModel(postgres_url)]
    envelopes = list(log.read())
    start = threading.Barrier(len(nodes))
    errors: list[BaseException] = []

    def follow(node: PostgresReadModel, size: int) -> None:
        try:
            start.wait()
            for page in pages(iter(envelopes), size):  # both deliver every event, in batches that overlap
                node.apply(page)
        except BaseException as exc:  # re-raised below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=follow, args=(node, size)) for node, size in zip(nodes, (3, 5), strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    rows = nodes[0].all_rows()
    assert rows == nodes[1].all_rows() == reference.all_rows()
    assert len({row[1] for row in rows}) == len(rows) == 58  # one row per task (two were deleted)
    assert nodes[0].position() == nodes[1].position() == log.last_seq()

    # A node that restarts, or replays the whole log, changes nothing (the audit on the shared table).
    assert nodes[1].catch_up(log) == 0
    assert nodes[1].rebuild(log) == len(envelopes) and nodes[0].all_rows() == rows
    for node in nodes:
        node.close()


def test_the_schema_is_migrated_once_and_versioned(postgres_url: str) -> None:
    import psycopg

    models = [PostgresReadModel(postgres_url) for _ in range(2)]  # a second node: nothing re-applied
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        positions = conn.execute("SELECT name, seq FROM consumer_positions").fetchall()
    assert positions == [("generate_record", 0)]
    for model in models:
        model.close()


def test_a_bad_url_or_an_unreachable_server_is_a_clear_start_up_error(tmp_path: Path, postgres_server) -> None:
    assert settings_from_env({"FOOOCUS_ES_READ_MODEL_URL": "postgresql://h/db"}).read_model_url == "postgresql://h/db"
    with pytest.raises(ValueError, match=r"--read-model .*'mysql://db/x'.*postgresql://"):
        open_read_model("mysql://db/x", tmp_path / "db.sqlite3")
    closed = postgres_server.url("postgres").replace(str(postgres_server.port), "1")  # nothing listens on port 1
    with pytest.raises(ReadModelUnavailable, match="is unreachable") as caught:
        open_read_model(closed.replace("postgres@", "postgres:secret@"), tmp_path / "db.sqlite3")
    assert "secret" not in str(caught.value) and classify(caught.value) == "unreachable"  # the follower retries it
