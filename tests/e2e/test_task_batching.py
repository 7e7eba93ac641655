"""Continuous batching across tasks on a real server (`serve --max-batch 4`, one runner on the CPU): a
task submitted while a compatible one samples joins its batch at the next step, gives the image it
gives alone, and ends on its own; a stop ends only its task; an incompatible task waits its turn,
and a compatible one queued behind it joins past it."""

from __future__ import annotations

import numpy as np
import requests
from e2e_helpers import image_from, submit, wait_for

SLOW = {"overwrite_step": 60, "aspect_ratios_selection": "128*128"}  # seconds of work on the demo model
TOLERANCE = 2  # of 255: tests/engine/test_batching.py measures and pins it


def _events(base: str, task_id: str) -> list[dict]:
    return requests.get(f"{base}/tasks/{task_id}/events", timeout=10).json()


def _at(base: str, task_id: str, kind: str) -> int:
    return next(e["seq"] for e in _events(base, task_id) if e["type"] == kind)


def _last_step(base: str, task_id: str) -> int:
    """When the device was done with the task (its saving then goes on beside the next one)."""
    return max(e["seq"] for e in _events(base, task_id) if e["type"] == "TaskProgress" and e["stage"] == "sampling")


def test_tasks_join_a_running_batch_and_end_on_their_own(make_server) -> None:
    server = make_server("--max-batch", "4").start()
    first = submit(server.url, {"prompt": "a lighthouse", "image_seed": 1, **SLOW})
    wait_for(server.url, first["task_id"], until="running", timeout=120)
    joiner = submit(server.url, {"prompt": "a red barn", "image_seed": 2, **SLOW, "overwrite_step": 40})
    stopped = submit(server.url, {"prompt": "a harbour", "image_seed": 3, **SLOW})
    other = submit(server.url, {"prompt": "a wide field", "image_seed": 4, **SLOW,
                                "aspect_ratios_selection": "192*128"})  # fmt: skip  # another size: no batch
    behind = submit(server.url, {"prompt": "a mill", "image_seed": 5, **SLOW, "overwrite_step": 20})  # joins past it
    wait_for(server.url, stopped["task_id"], until="running", timeout=120)
    assert requests.post(f"{server.url}/tasks/{stopped['task_id']}/cancel", timeout=10).status_code == 200
    tasks = (first, joiner, stopped, other, behind)
    ended = {t["task_id"]: wait_for(server.url, t["task_id"], timeout=300) for t in tasks}
    assert [ended[t["task_id"]]["task_status"] for t in tasks] == [
        "finished", "finished", "stop", "finished", "finished",
    ]  # fmt: skip
    url = server.url
    # One runner: the joiners started while the first sampled, so they were in its batch.
    assert _at(url, joiner["task_id"], "TaskStarted") < _at(url, first["task_id"], "TaskFinished")
    assert _at(url, stopped["task_id"], "TaskStarted") < _at(url, first["task_id"], "TaskFinished")
    # The joiner has fewer steps: it ended before the task it joined.
    assert _at(url, joiner["task_id"], "TaskFinished") < _at(url, first["task_id"], "TaskFinished")
    # The other size waited for the batch to end (held, to run next); the task queued behind it
    # with the batch's size joined the batch past it.
    assert _at(url, other["task_id"], "TaskStarted") > _last_step(url, first["task_id"])
    assert _at(url, behind["task_id"], "TaskStarted") < _at(url, first["task_id"], "TaskFinished")

    batched = np.asarray(image_from(ended[joiner["task_id"]]["result"][0]))
    again = submit(server.url, {"prompt": "a red barn", "image_seed": 2, **SLOW, "overwrite_step": 40})
    alone = np.asarray(image_from(wait_for(server.url, again["task_id"], timeout=300)["result"][0]))
    assert int(np.abs(batched.astype(np.int16) - alone.astype(np.int16)).max()) <= TOLERANCE
