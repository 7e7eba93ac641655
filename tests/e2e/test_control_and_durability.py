"""Stop, skip, cancel, the bounded queue, kill -9 recovery and replay."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import requests
from e2e_helpers import submit, wait_for

SLOW = {"overwrite_step": 200, "aspect_ratios_selection": "128*128"}  # seconds of work on the demo model


def test_stop_keeps_finished_images_and_skip_drops_one(make_server) -> None:
    server = make_server().start()
    assert requests.post(server.url + "/v1/engine/control", params={"action": "stop"}, timeout=10).json() == {
        "message": "No task running"
    }
    task = submit(server.url, {"prompt": "stop me", **SLOW})
    wait_for(server.url, task["task_id"], until="running")
    assert (
        requests.post(server.url + "/v1/engine/control", params={"action": "stop"}, timeout=10).json()["message"]
        == "task stopped"
    )
    stopped = wait_for(server.url, task["task_id"])
    assert stopped["task_status"] == "stop" and stopped["result"] == []

    skip = submit(
        server.url,
        {"prompt": "skip one", "image_number": 2, "overwrite_step": 60, "aspect_ratios_selection": "128*128"},
    )
    wait_for(server.url, skip["task_id"], until="running")
    assert (
        requests.post(server.url + "/v1/engine/control", params={"action": "skip"}, timeout=10).json()["message"]
        == "task skipped"
    )
    skipped = wait_for(server.url, skip["task_id"])
    assert skipped["task_status"] == "skip" and len(skipped["result"]) == 1
    events = [e["type"] for e in requests.get(f"{server.url}/tasks/{skip['task_id']}/events", timeout=10).json()]
    assert "TaskSkipped" in events and events[-1] == "TaskFinished"
    bad = requests.post(server.url + "/v1/engine/control", params={"action": "explode"}, timeout=10).json()
    assert bad == {"message": "Invalid control action"}


def test_cancel_a_pending_task_and_the_queue_bound(make_server) -> None:
    server = make_server("--queue-size", "2").start()
    running = submit(server.url, {"prompt": "long", **SLOW})
    wait_for(server.url, running["task_id"], until="running")
    first, second = submit(server.url, {"prompt": "a"}), submit(server.url, {"prompt": "b"})
    full = requests.post(server.url + "/v1/engine/generate/", json={"prompt": "c", "async_process": True}, timeout=10)
    assert full.status_code == 429 and int(full.headers["retry-after"]) > 0 and "queue is full" in full.text
    pending = requests.get(server.url + "/tasks", params={"query": "pending"}, timeout=10).json()["pending"]
    assert [r["task_id"] for r in pending] == [first["task_id"], second["task_id"]]
    cancelled = requests.post(f"{server.url}/tasks/{first['task_id']}/cancel", timeout=10).json()
    assert cancelled["message"] == "task cancelled"
    assert requests.get(f"{server.url}/tasks/{first['task_id']}", timeout=10).json()["task_status"] == "cancelled"
    assert requests.post(f"{server.url}/tasks/{'f' * 32}/cancel", timeout=10).status_code == 404
    requests.post(server.url + "/v1/engine/control", params={"action": "stop"}, timeout=10)
    assert wait_for(server.url, second["task_id"])["task_status"] == "finished"
    assert wait_for(server.url, running["task_id"])["task_status"] == "stop"


def test_kill_minus_9_then_restart_loses_nothing_and_replay_is_identical(make_server) -> None:
    server = make_server().start()
    running = submit(server.url, {"prompt": "interrupted", **SLOW})
    wait_for(server.url, running["task_id"], until="running")
    queued = [submit(server.url, {"prompt": f"q{i}", "image_seed": i})["task_id"] for i in range(3)]
    server.kill()

    restarted = make_server(data_dir=server.data_dir).start()
    interrupted = wait_for(restarted.url, running["task_id"])
    assert interrupted["task_status"] == "failed" and interrupted["error"]["message"] == "interrupted by restart"
    for task_id in queued:
        done = wait_for(restarted.url, task_id)
        assert done["task_status"] == "finished" and len(done["result"]) == 1
    restarted.stop()

    db_path = server.data_dir / "outputs" / "db.sqlite3"
    before = _records(db_path)
    assert len(before) == 4
    replay = subprocess.run([sys.executable, "-m", "fooocus_es", "replay", "--data-dir", str(server.data_dir)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert replay.returncode == 0, replay.stderr
    assert _records(db_path) == before


def _records(path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT * FROM generate_record ORDER BY id").fetchall()
