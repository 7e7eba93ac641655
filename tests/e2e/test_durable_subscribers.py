"""Subscribers that survive a crash: a webhook owed across kill -9 and a receiver outage, and the
resumable per-task event stream (/tasks/{id}/stream with Last-Event-ID)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import requests
from conftest import free_port
from e2e_helpers import Receiver, submit, wait_for

# One try per round, to a loopback receiver (which needs the opt-in).
LOOPBACK_HOOKS = {"FOOOCUS_ES_WEBHOOK_RETRIES": "0", "FOOOCUS_ES_ALLOW_PRIVATE_WEBHOOKS": "true"}


def outbox(data_dir: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(data_dir / "outputs" / "db.sqlite3") as db:  # what the server wrote, read as a file
        return db.execute(sql).fetchall()


def test_a_webhook_owed_while_the_receiver_was_down_and_the_server_was_killed_is_delivered_after_restart(
    make_server, tmp_path: Path
) -> None:
    port = free_port()  # the receiver's port: nothing listens there yet
    data_dir = tmp_path / "durable"
    server = make_server(data_dir=data_dir, env=LOOPBACK_HOOKS).start()
    task = submit(server.url, {"prompt": "owed", "webhook_url": f"http://127.0.0.1:{port}/hook"})
    wait_for(server.url, task["task_id"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not outbox(data_dir, "SELECT 1 FROM webhook_attempts"):
        time.sleep(0.1)
    first = outbox(data_dir, "SELECT state, attempts, last_status FROM webhook_deliveries")
    assert first == [("failed", 1, None)]  # connection refused, its one try spent
    server.kill()

    receiver = Receiver(failures=0, port=port)
    try:
        restarted = make_server(data_dir=data_dir, env=LOOPBACK_HOOKS).start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not receiver.bodies:
            time.sleep(0.1)
        assert len(receiver.bodies) == 1 and receiver.bodies[0]["task_id"] == task["task_id"]
        assert receiver.bodies[0]["task_status"] == "finished"
        # The server writes the attempt down after the receiver's answer: a moment after the body arrived.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not outbox(data_dir, "SELECT 1 FROM webhook_attempts WHERE attempt = 2"):
            time.sleep(0.05)
        rows = outbox(data_dir, "SELECT state, attempts, last_status FROM webhook_deliveries")
        assert rows == [("delivered", 2, 200)]
        attempts = outbox(data_dir, "SELECT attempt, status_code FROM webhook_attempts ORDER BY id")
        assert attempts == [(1, None), (2, 200)]
        restarted.stop()
        make_server(data_dir=data_dir).start()  # delivered once: a further restart sends nothing
        time.sleep(1.0)
        assert len(receiver.bodies) == 1
    finally:
        receiver.httpd.shutdown()


def read_stream(url: str, headers: dict[str, str] | None = None, limit: int | None = None) -> list[dict]:
    """SSE messages as {id, event, data}; stops after `limit` messages or at the end of the stream."""
    messages: list[dict] = []
    with requests.get(url, headers=headers or {}, stream=True, timeout=60) as response:
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        current: dict = {}
        for line in response.iter_lines(decode_unicode=True):
            if line:
                field, _, value = line.partition(": ")
                current[field] = value
                continue
            if current:
                messages.append(current)
                current = {}
                if limit is not None and len(messages) == limit:
                    break
    return messages


def test_the_task_stream_replays_from_the_log_and_resumes_after_last_event_id(server) -> None:
    done = wait_for(server.url, submit(server.url, {"prompt": "resume"})["task_id"])
    url = f"{server.url}/tasks/{done['task_id']}/stream"
    audit = requests.get(f"{server.url}/tasks/{done['task_id']}/events", timeout=10).json()

    everything = read_stream(url)
    assert [int(m["id"]) for m in everything] == [e["seq"] for e in audit]
    assert [m["event"] for m in everything] == [e["type"] for e in audit]
    assert everything[-1]["event"] == "TaskFinished"

    head = read_stream(url, limit=3)  # a client that dropped after three messages...
    rest = read_stream(url, headers={"Last-Event-ID": head[-1]["id"]})  # ...reconnects and loses nothing
    assert [m["id"] for m in head + rest] == [m["id"] for m in everything]
    assert read_stream(url, headers={"Last-Event-ID": everything[-1]["id"]}) == []  # after the end: nothing
    assert requests.get(f"{server.url}/tasks/0123456789abcdef/stream", timeout=10).status_code == 404


def test_the_task_stream_follows_a_running_task_live_to_its_end(server) -> None:
    task = submit(server.url, {"prompt": "live", "image_number": 2, "advanced_params": {"overwrite_step": 6}})
    messages = read_stream(f"{server.url}/tasks/{task['task_id']}/stream")
    ids = [int(m["id"]) for m in messages]
    assert ids == sorted(set(ids)) and messages[0]["event"] == "TaskQueued"
    assert messages[-1]["event"] in ("TaskFinished", "TaskStopped", "TaskFailed")
    assert any(m["event"] == "TaskProgress" and '"stage":"sampling"' in m["data"] for m in messages)
