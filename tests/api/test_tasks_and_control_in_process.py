"""Stop, skip, cancel and the /tasks listing in process, on a fake engine held at a known step."""

from __future__ import annotations

import time

from litestar.testing import TestClient

from .api_helpers import FAST, GENERATE, submit, wait_for
from .fake_engine import FakeEngine


def _control(client: TestClient, action: str) -> str:
    return client.post("/v1/engine/control", params={"action": action}).json()["message"]


def test_stop_ends_the_running_task_without_images(client: TestClient, engine: FakeEngine) -> None:
    assert _control(client, "stop") == "No task running"
    engine.hold()
    task = submit(client, {"prompt": "stop me"})
    assert engine.parked.wait(10)
    assert _control(client, "stop") == "task stopped"
    engine.release()
    stopped = wait_for(client, task["task_id"])
    assert stopped["task_status"] == "stop" and stopped["result"] == []
    assert _control(client, "explode") == "Invalid control action"


def test_skip_drops_the_current_image_and_the_next_one_runs(client: TestClient, engine: FakeEngine) -> None:
    engine.hold()
    task = submit(client, {"prompt": "skip one", "image_number": 2, "image_seed": 7})
    assert engine.parked.wait(10)
    response = client.post("/v1/engine/control", json={"action": "skip"})  # the JSON-body form some clients use
    assert response.json()["message"] == "task skipped"
    engine.release()
    skipped = wait_for(client, task["task_id"])
    assert skipped["task_status"] == "skip" and len(skipped["result"]) == 1
    events = client.get(f"/tasks/{task['task_id']}/events").json()
    assert [e["image_index"] for e in events if e["type"] == "TaskSkipped"] == [0]
    assert events[-1]["type"] == "TaskFinished"


def test_cancel_a_pending_task_and_the_tasks_listing(client: TestClient, engine: FakeEngine) -> None:
    engine.hold()
    running = submit(client, {"prompt": "long"})
    assert engine.parked.wait(10)
    first, second = submit(client, {"prompt": "a"}), submit(client, {"prompt": "b"})
    # The live view follows the log: the parked step's progress (and preview) arrives just after.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        listing = client.get("/tasks").json()
        if listing["current"] and listing["current"][0].get("preview"):
            break
        time.sleep(0.02)
    assert [r["task_id"] for r in listing["current"]] == [running["task_id"]]
    assert listing["current"][0]["preview"].startswith("data:image/jpeg;base64,")
    assert [r["task_id"] for r in listing["pending"]] == [first["task_id"], second["task_id"]]
    assert listing["history"] == []

    cancelled = client.post(f"/tasks/{first['task_id']}/cancel").json()
    assert cancelled == {"task_id": first["task_id"], "message": "task cancelled"}
    assert client.get(f"/tasks/{first['task_id']}").json()["task_status"] == "cancelled"
    assert client.delete(f"/tasks/{second['task_id']}").status_code == 409  # pending: cancel it first
    assert client.post(f"/tasks/{'f' * 32}/cancel").status_code == 404
    pending = client.get("/tasks", params={"query": "pending"}).json()
    assert [r["task_id"] for r in pending["pending"]] == [second["task_id"]] and pending["current"] == []

    engine.release()
    assert wait_for(client, second["task_id"])["task_status"] == "finished"
    assert wait_for(client, running["task_id"])["task_status"] == "finished"
    history = client.get("/tasks", params={"query": "history"}).json()["history"]
    # Newest queued first; the cancelled task is history too.
    assert [r["task_id"] for r in history] == [second["task_id"], first["task_id"], running["task_id"]]
    assert client.get("/tasks").json()["current"] == client.get("/tasks").json()["pending"] == []
    assert [plan.prompt for plan in engine.prepared] == ["long", "b"]  # the cancelled task never ran
    # DELETE removes an ended task (its record and outputs); then it is gone for GET and DELETE alike.
    deleted = client.delete(f"/tasks/{first['task_id']}").json()
    assert deleted == {"task_id": first["task_id"], "message": "task deleted"}
    assert client.get(f"/tasks/{first['task_id']}").status_code == 404
    assert client.get(f"/tasks/{first['task_id']}/events").status_code == 404  # the log keeps them; the API not
    assert client.get(f"/tasks/{first['task_id']}/stream").status_code == 404
    assert client.delete(f"/tasks/{first['task_id']}").status_code == 404


def test_a_full_queue_answers_429(make_client, engine: FakeEngine) -> None:
    client = make_client(queue_size=1)
    engine.hold()
    running = submit(client, {"prompt": "running"})
    assert engine.parked.wait(10)
    # The live view follows the log: wait until it shows the task running, not pending, as the queue counts it.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and client.get(f"/tasks/{running['task_id']}").json()["task_status"] != "running":
        time.sleep(0.01)
    submit(client, {"prompt": "pending"})
    full = client.post(GENERATE, json={**FAST, "prompt": "one too many", "async_process": True})
    assert full.status_code == 429 and int(full.headers["retry-after"]) > 0 and "queue is full" in full.text


def test_runners_lists_this_processs_runner(client: TestClient) -> None:
    runners = client.get("/runners").json()["runners"]
    assert len(runners) == 1 and runners[0]["state"] == "idle" and runners[0]["device"] == "cpu"
    assert runners[0]["pool"] == "default" and runners[0]["task_id"] is None
