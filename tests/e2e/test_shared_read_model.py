"""`fooocus-es serve --read-model postgresql://...`: a real server process keeps its history in a
real PostgreSQL, `replay` rebuilds it there, and a bad --read-model stops the start with a reason."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import psycopg
import requests
from conftest import ROOT
from e2e_helpers import submit, wait_for

from fooocus_es.projections.records import COLUMNS

_ROWS = f"SELECT {', '.join(COLUMNS)} FROM generate_record ORDER BY id"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fooocus_es", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)  # fmt: skip


def test_serve_keeps_history_in_postgresql_and_replay_rebuilds_it_there(make_server, postgres_url: str) -> None:
    server = make_server("--read-model", postgres_url).start()
    done = wait_for(server.url, submit(server.url, {"prompt": "shared history"})["task_id"])
    assert done["task_status"] == "finished"
    history = requests.get(server.url + "/tasks", params={"query": "history"}, timeout=10).json()["history"]
    assert [row["task_id"] for row in history] == [done["task_id"]]
    sqlite_path = server.data_dir / "outputs" / "db.sqlite3"
    with sqlite3.connect(sqlite_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM generate_record").fetchone() == (0,)  # the log's file holds no rows
    server.stop()
    with psycopg.connect(postgres_url) as conn:
        before = conn.execute(_ROWS).fetchall()
    assert [(row[1], row[6]) for row in before] == [(done["task_id"], "finished")]

    replayed = _cli("replay", "--data-dir", str(server.data_dir), "--read-model", postgres_url)
    assert replayed.returncode == 0 and "postgresql://" in replayed.stdout, replayed.stderr
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute(_ROWS).fetchall() == before  # the audit, on the shared table
    assert _cli("replay", "--data-dir", str(server.data_dir)).returncode == 0  # the same log into SQLite
    with sqlite3.connect(sqlite_path) as conn:
        assert conn.execute(_ROWS).fetchall() == before  # row for row what PostgreSQL holds


def test_a_read_model_url_that_is_not_postgresql_stops_the_start_naming_the_flag(tmp_path) -> None:
    refused = _cli("serve", "--data-dir", str(tmp_path), "--read-model", "mysql://db/history")
    assert refused.returncode == 2
    assert "--read-model (FOOOCUS_ES_READ_MODEL_URL) 'mysql://db/history'" in refused.stderr


def test_two_fleet_api_nodes_share_one_postgresql_history(make_server, postgres_url: str, nats_url: str,
                                                          tmp_path, demo_models) -> None:  # fmt: skip
    """The deployment the flag is for: API nodes of a fleet, one history table. Both nodes follow the
    stream and apply every event; the shared position makes each event one row change."""
    from fleet_helpers import RunnerProcess

    fleet = ("--log", nats_url, "--no-runner", "--ack-wait", "2", "--read-model", postgres_url)
    a, b = make_server(*fleet).start(), make_server(*fleet).start()
    runner = RunnerProcess(tmp_path / "runner", demo_models, nats_url).start()
    try:
        tasks = [submit(node.url, {"prompt": f"shared {i}"})["task_id"] for i, node in enumerate((a, b, a))]
        for task_id in tasks:
            assert wait_for(b.url, task_id, timeout=120)["task_status"] == "finished"
        for node in (a, b):  # the same rows from either node, newest first
            history = requests.get(node.url + "/tasks", params={"query": "history"}, timeout=10).json()["history"]
            assert [row["task_id"] for row in history] == tasks[::-1]
    finally:
        runner.stop()
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute("SELECT task_id, task_status FROM generate_record ORDER BY id").fetchall()
    assert rows == [(task_id, "finished") for task_id in tasks]  # one row a task, written once
