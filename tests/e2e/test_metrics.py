"""GET /metrics: Litestar's request metrics plus the task metrics fed from the event bus."""

from __future__ import annotations

import json
import re

import requests
from conftest import free_port
from e2e_helpers import submit, wait_for
from prometheus_client.parser import text_string_to_metric_families

from fooocus_es.events.types import (
    Envelope,
    TaskCancelled,
    TaskFailed,
    TaskFinished,
    TaskProgress,
    TaskQueued,
    TaskSkipped,
    TaskStarted,
    TaskStopped,
)
from fooocus_es.ops.metrics import TaskMetrics


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def test_metrics_page_after_tasks(make_server, tmp_path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "presets").mkdir(parents=True)
    closed = f"http://127.0.0.1:{free_port()}/absent.safetensors"  # named by a preset, never downloaded
    preset = {"default_model": "absent.safetensors", "checkpoint_downloads": {"absent.safetensors": closed}}
    (data_dir / "presets" / "broken.json").write_text(json.dumps(preset))
    server = make_server("--api-key", "k", data_dir=data_dir).start()
    key = {"X-API-KEY": "k"}

    finished = wait_for(server.url, submit(server.url, {"prompt": "count me"}, headers=key)["task_id"], headers=key)
    failed = wait_for(server.url, submit(server.url, {"prompt": "x", "preset": "broken"}, headers=key)["task_id"],
                      headers=key)  # fmt: skip
    assert finished["task_status"] == "finished" and failed["task_status"] == "failed"

    assert requests.get(server.url + "/metrics", timeout=10).status_code == 401  # behind the key like the rest
    page = requests.get(server.url + "/metrics", headers=key, timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/plain")
    found = samples(page.text)

    request_labels = {"app_name": "fooocus_es", "method": "POST", "path": "/v1/engine/generate", "status_code": "200"}
    assert value(found, "fooocus_es_requests_total", **request_labels) == 2.0
    # group_path: one series for every task id.
    assert re.search(r'fooocus_es_requests_total\{[^}]*path="/tasks/\{task_id(:str)?\}"', page.text)
    assert finished["task_id"] not in page.text

    assert value(found, "fooocus_es_tasks_total", status="finished") == 1.0
    assert value(found, "fooocus_es_tasks_total", status="failed") == 1.0
    assert value(found, "fooocus_es_task_errors_total", error_type="ModelMissing") == 1.0
    assert value(found, "fooocus_es_tasks_queued_total") == 2.0
    assert value(found, "fooocus_es_queue_depth") == 0.0
    assert value(found, "fooocus_es_tasks_running") == 0.0
    assert value(found, "fooocus_es_task_duration_seconds_count", status="finished") == 1.0
    assert value(found, "fooocus_es_step_duration_seconds_count") == 3.0  # 4 Lightning steps: 3 intervals


def _feed(metrics: TaskMetrics, *events) -> None:
    for seq, event in enumerate(events, start=1):
        metrics.apply(Envelope(seq, event))


def _step(task_id: str, at: int, step: int, image: int = 1) -> TaskProgress:
    return TaskProgress(
        task_id=task_id, at_ms=at, percent=50, message=f"Sampling step {step}/4, image {image}/2 ...",
        stage="sampling", step=step, steps=4, image_index=image - 1, image_count=2,
    )  # fmt: skip


def test_task_metrics_from_events() -> None:
    metrics = TaskMetrics()
    _feed(
        metrics,
        TaskQueued(task_id="a", at_ms=0, params={}),
        TaskQueued(task_id="b", at_ms=0, params={}),
        TaskQueued(task_id="c", at_ms=0, params={}),
        TaskStarted(task_id="a", at_ms=1000),
        TaskProgress(task_id="a", at_ms=1100, percent=13, message="Preparing task 1/2 ..."),
        _step("a", 1200, 1), _step("a", 1300, 2), _step("a", 1500, 3),  # 2 intervals: 0.1 s, 0.2 s
        _step("a", 1600, 1, image=2),  # a new image: not a step interval
        TaskSkipped(task_id="a", at_ms=1650, image_index=1),
        TaskFinished(task_id="a", at_ms=3000, result=["outputs/x.png"]),
        TaskStarted(task_id="b", at_ms=3000),
        TaskStopped(task_id="b", at_ms=3500),
        TaskCancelled(task_id="c", at_ms=3600),
        TaskFailed(task_id="d", at_ms=3700, error_type="Interrupted", message="interrupted by restart"),
    )  # fmt: skip
    found = samples(metrics.render().decode())
    assert value(found, "fooocus_es_tasks_total", status="skip") == 1.0  # finished with a skipped image
    assert value(found, "fooocus_es_tasks_total", status="stop") == 1.0
    assert value(found, "fooocus_es_tasks_total", status="cancelled") == 1.0
    assert value(found, "fooocus_es_task_errors_total", error_type="Interrupted") == 1.0
    assert value(found, "fooocus_es_step_duration_seconds_count") == 2.0
    assert abs(value(found, "fooocus_es_step_duration_seconds_sum") - 0.3) < 1e-9
    assert value(found, "fooocus_es_task_duration_seconds_sum", status="skip") == 2.0
    assert value(found, "fooocus_es_queue_depth") == 0.0 and value(found, "fooocus_es_tasks_running") == 0.0
    # A second app in the same process gets its own registry: no duplicate-timeseries error.
    assert samples(TaskMetrics().render().decode())
