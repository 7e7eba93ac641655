"""`serve --devices cpu,cpu`: two runners in one process on one queue (as `--devices cuda:0,cuda:1` on two GPUs)."""

from __future__ import annotations

import time

import requests
from e2e_helpers import submit, wait_for
from test_metrics import samples, value

SLOW = {"overwrite_step": 200, "aspect_ratios_selection": "128*128"}  # seconds of work on the demo model


def _wait_until(check, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"not reached in {timeout} s")


def test_two_runners_in_one_process_run_two_tasks_at_once(make_server) -> None:
    server = make_server("--devices", "cpu,cpu").start()
    listed = requests.get(server.url + "/runners", timeout=10).json()["runners"]
    assert len(listed) == 2 and len({r["runner_id"] for r in listed}) == 2
    assert {r["device"] for r in listed} == {"cpu"} and all(r["state"] == "idle" for r in listed)

    first, second = (submit(server.url, {"prompt": f"device {i}", **SLOW}) for i in range(2))
    for task in (first, second):  # both sample at the same time: neither waits for the other
        wait_for(server.url, task["task_id"], until="running", timeout=120)
    health = requests.get(server.url + "/health", timeout=10).json()
    assert health["runners"] == {"idle": 0, "busy": 2, "stale": 0}
    assert sorted(health["running"]) == sorted([first["task_id"], second["task_id"]])
    metrics = samples(requests.get(server.url + "/metrics", timeout=10).text)
    assert value(metrics, "fooocus_es_runners", state="busy") == 2
    busy = {r["task_id"]: r["runner_id"] for r in requests.get(server.url + "/runners", timeout=10).json()["runners"]}
    assert set(busy) == {first["task_id"], second["task_id"]}

    # A stop reaches the runner that holds the task, and only that one.
    assert requests.post(f"{server.url}/tasks/{first['task_id']}/cancel", timeout=10).status_code == 200
    assert wait_for(server.url, first["task_id"], timeout=120)["task_status"] == "stop"
    assert requests.get(f"{server.url}/tasks/{second['task_id']}", timeout=10).json()["task_status"] == "running"
    assert wait_for(server.url, second["task_id"], timeout=180)["task_status"] == "finished"
    _wait_until(lambda: requests.get(server.url + "/health", timeout=10).json()["runners"]["idle"] == 2)


def test_a_device_that_is_not_one_is_refused_at_start(make_server) -> None:
    server = make_server("--devices", "cpu,gpu0")
    try:
        server.start(timeout=30)
    except RuntimeError as exc:
        assert "devices: 'gpu0' is not a device" in str(exc)
    else:
        raise AssertionError("the server started with --devices cpu,gpu0")
