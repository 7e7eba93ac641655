"""Fleet bench (CPU, demo model): tasks a minute and enqueue-to-start latency with 1, 2 and 4 runner
processes behind one API node on NATS JetStream, against one server with its runner in-process;
events a second through the stream.

    .venv/bin/python bench/fleet.py [--tasks 24]      # or: nox -s bench -- --only fleet
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import ServerProcess  # noqa: E402  - the tests' real-server harness
from fleet_helpers import RunnerProcess  # noqa: E402
from nats_server import NatsServer  # noqa: E402

from fooocus_es.engine.demo.checkpoint import ensure_demo_checkpoint  # noqa: E402
from fooocus_es.events.jetstream import JetStreamEventLog  # noqa: E402
from fooocus_es.events.types import TaskProgress, TaskQueued  # noqa: E402

BODY = {
    "prompt": "bench",
    "performance_selection": "Lightning",
    "aspect_ratios_selection": "64*64",
    "async_process": True,
}


def run_tasks(base: str, count: int) -> dict[str, float]:
    """`count` async submits at once, then every record: throughput and enqueue-to-start latency."""
    ids: list[str] = []
    started = time.perf_counter()
    for i in range(count):
        response = requests.post(base + "/v1/engine/generate/", json={**BODY, "image_seed": i}, timeout=60)
        assert response.status_code == 200, response.text
        ids.append(response.json()["task_id"])
    records = []
    for task_id in ids:
        while True:
            record = requests.get(f"{base}/tasks/{task_id}", timeout=30).json()
            if record.get("finish_mills"):
                records.append(record)
                break
            time.sleep(0.05)
    seconds = time.perf_counter() - started
    assert all(r["task_status"] == "finished" for r in records), [r["task_status"] for r in records]
    waits = sorted(r["start_mills"] - r["in_queue_mills"] for r in records)
    runs = [r["finish_mills"] - r["start_mills"] for r in records]
    return {
        "tasks": count,
        "tasks_per_minute": round(count * 60 / seconds, 1),
        "run_median_ms": round(statistics.median(runs), 1),
        "enqueue_to_start_p50_ms": waits[len(waits) // 2],
        "enqueue_to_start_p95_ms": waits[max(0, int(len(waits) * 0.95) - 1)],
    }


def in_process(tmp: Path, models: Path, count: int) -> dict[str, float]:
    server = ServerProcess(tmp / "single", models, "--queue-size", "1000").start()
    try:
        run_tasks(server.url, 2)  # warm-up: the model load
        return run_tasks(server.url, count)
    finally:
        server.stop()


def fleet(tmp: Path, models: Path, runners: int, count: int) -> dict[str, float]:
    (tmp / f"nats-{runners}").mkdir()
    nats = NatsServer(tmp / f"nats-{runners}").start()
    node = ServerProcess(tmp / f"api-{runners}", models, "--log", nats.url, "--no-runner", "--queue-size", "1000")
    started: list[RunnerProcess] = []
    try:
        node.start()
        for n in range(runners):
            started.append(RunnerProcess(tmp / f"runner-{runners}-{n}", models, nats.url))
            started[-1].start()
        run_tasks(node.url, 2 * runners)  # warm-up: each runner loads the model
        return {"runners": runners, **run_tasks(node.url, count)}
    finally:
        for runner in started:
            runner.stop()
        node.stop()
        nats.stop()


def stream_rate(tmp: Path, events: int = 2000) -> dict[str, float]:
    """Appends a second through FES_EVENTS: one writer, and four writers on their own tasks."""
    (tmp / "nats-rate").mkdir()
    nats = NatsServer(tmp / "nats-rate").start()
    try:
        log = JetStreamEventLog(nats.url)
        log.append(TaskQueued(task_id="one", at_ms=0, params={}))
        begin = time.perf_counter()
        for i in range(events):
            log.append(TaskProgress(task_id="one", at_ms=i, percent=i % 100, message=""))
        single = events / (time.perf_counter() - begin)

        def writer(task_id: str) -> None:
            log.append(TaskQueued(task_id=task_id, at_ms=0, params={}))
            for i in range(events // 4):
                log.append(TaskProgress(task_id=task_id, at_ms=i, percent=i % 100, message=""))

        threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(4)]
        begin = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        four = events / (time.perf_counter() - begin)
        log.close()
        return {"one_writer_per_s": round(single), "four_writers_per_s": round(four)}
    finally:
        nats.stop()


def bench_fleet(tmp: Path, models: Path, count: int) -> dict[str, object]:
    return {
        "in_process": in_process(tmp, models, count),
        "fleet": [fleet(tmp, models, runners, count) for runners in (1, 2, 4)],
        "stream": stream_rate(tmp),
        "note": "2 CPU cores: runner processes share them, so more runners add no compute here; the numbers "
        "show the fleet's overhead and its balancing, not a GPU fleet's scaling",
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=24)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        models = tmp / "models"
        ensure_demo_checkpoint(models / "checkpoints")
        print(json.dumps(bench_fleet(tmp, models, args.tasks), indent=2))


if __name__ == "__main__":
    main()
