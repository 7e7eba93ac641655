"""Benchmarks (CPU, demo model): server overhead per task, event append rate, /tasks at 100k tasks,
async submit latency under a burst of concurrent submits, the device's wait between tasks while
the last one's images are saved.

    nox -s bench            # or: .venv/bin/python bench/run.py [--tasks 100000] [--requests 20]
    .venv/bin/python bench/run.py --only burst   # one section (append, overhead, history, burst)

Prints a table and writes bench/results.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Final

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from conftest import ServerProcess  # noqa: E402  - the tests' real-server harness
from fleet import bench_fleet  # noqa: E402  - bench/fleet.py

from fooocus_es.engine.demo.checkpoint import ensure_demo_checkpoint  # noqa: E402
from fooocus_es.engine.planning import plan as planning  # noqa: E402
from fooocus_es.engine.planning import presets  # noqa: E402
from fooocus_es.events.sqlite import SqliteEventLog  # noqa: E402
from fooocus_es.events.types import TaskFinished, TaskProgress, TaskQueued, TaskStarted  # noqa: E402
from fooocus_es.projections.records import SqliteReadModel  # noqa: E402

BODY = {"prompt": "bench", "performance_selection": "Lightning", "aspect_ratios_selection": "64*64", "image_seed": 1}


def bench_append(tmp: Path, count: int = 20_000) -> dict[str, float]:
    log = SqliteEventLog(tmp / "append.sqlite3")
    log.append(TaskQueued(task_id="t", at_ms=0, params={}))
    started = time.perf_counter()
    for i in range(count):
        log.append(TaskProgress(task_id="t", at_ms=i, percent=i % 100, message="Sampling step", step=i))
    seconds = time.perf_counter() - started
    return {"events": count, "seconds": round(seconds, 3), "events_per_second": round(count / seconds)}


def fill_log(data_dir: Path, tasks: int) -> float:
    log = SqliteEventLog(data_dir / "outputs" / "db.sqlite3")
    params = planning.finalize(
        planning.merge_layers({"prompt": "filler"}, presets.preset_request_defaults(presets.load_preset("demo")))
    )
    base = int(time.time() * 1000) - tasks * 10
    started = time.perf_counter()
    for i in range(tasks):
        task_id = uuid.uuid4().hex
        at = base + i * 10
        log.append(TaskQueued(task_id=task_id, at_ms=at, params=params), expected_version=0)
        log.append(TaskStarted(task_id=task_id, at_ms=at + 1), expected_version=1)
        log.append(TaskFinished(task_id=task_id, at_ms=at + 5, result=[f"outputs/2026-01-01/{task_id}.png"]), 2)
    SqliteReadModel(log.path).catch_up(log)  # the table as the server keeps it (it would catch up at start too)
    log.close()
    return time.perf_counter() - started


def timed_get(url: str, params: dict, repeat: int = 20) -> dict[str, float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = requests.get(url, params=params, timeout=30)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
    return {"median_ms": round(statistics.median(times), 2), "max_ms": round(max(times), 2)}


def bench_history(tmp: Path, models: Path, tasks: int) -> dict[str, object]:
    data_dir = tmp / "history"
    fill_seconds = fill_log(data_dir, tasks)
    server = ServerProcess(data_dir, models).start()
    try:
        url = server.url + "/tasks"
        now = time.time()
        result = {
            "tasks": tasks,
            "events": tasks * 3,
            "fill_seconds": round(fill_seconds, 1),
            "history_page_0": timed_get(url, {"query": "history", "page_size": 10}),
            "history_page_5000": timed_get(url, {"query": "history", "page": 5000, "page_size": 10}),
            "history_last_page": timed_get(url, {"query": "history", "page": tasks // 10 - 1, "page_size": 10}),
            "history_keyset_deep": timed_get(url, {"query": "history", "page_size": 10, "before": tasks * 2}),
            "history_range_1min": timed_get(url, {"query": "history", "start_at": _iso(now - 60), "end_at": _iso(now)}),
            "one_task": timed_get(url, {"query": "current"}),
            "history_range_all": streamed_range(server, url, tasks),
        }
    finally:
        server.stop()
    return result


def streamed_range(server: ServerProcess, url: str, tasks: int) -> dict[str, float]:
    """Every ended task in one range query: time, and the server's RSS growth while it answers."""
    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status")

    def rss_kib() -> int:
        line = next(line for line in status.read_text().splitlines() if line.startswith("VmRSS:"))
        return int(line.split()[1])

    before, peak, done = rss_kib(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    params = {"query": "history", "start_at": _iso(time.time() - tasks / 50), "end_at": _iso(time.time() + 60)}
    response = requests.get(url, params=params, timeout=300)
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    assert response.status_code == 200, response.text
    return {
        "records": len(response.json()["history"]),
        "seconds": round(seconds, 2),
        "body_mib": round(len(response.content) / 2**20, 1),
        "server_rss_growth_mib": round((peak[0] - before) / 1024, 1),
    }


def _iso(epoch: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(epoch).isoformat(timespec="seconds")


def bench_overhead(tmp: Path, models: Path, count: int) -> dict[str, float]:
    """End-to-end latency of a blocking request minus the engine's own time for the same plan."""
    from fooocus_es.engine.diffusion.pipeline import Engine
    from fooocus_es.engine.models.store import ModelStore

    class NoHooks:
        def on_step(self, *args: object) -> None:
            pass

        def poll_control(self) -> None:
            return None

    import torch

    torch.set_num_threads(1)  # as the server under test runs (ServerProcess sets FOOOCUS_ES_TORCH_THREADS=1)
    params = planning.finalize(
        planning.merge_layers(BODY, presets.preset_request_defaults(presets.load_preset("demo")))
    )
    plan = planning.build_plan("bench", params)
    engine = Engine(ModelStore(models))
    engine.prepare(plan)
    engine.generate(plan, NoHooks())  # warm-up
    engine_ms = []
    for _ in range(count):
        started = time.perf_counter()
        engine.generate(plan, NoHooks())
        engine_ms.append((time.perf_counter() - started) * 1000)

    server = ServerProcess(tmp / "overhead", models).start()
    try:
        url = server.url + "/v1/engine/generate/"
        headers = {"Accept": "application/json"}
        requests.post(url, json=BODY, headers=headers, timeout=60)  # warm-up: model load
        e2e_ms, outside_ms = [], []
        for _ in range(count):
            started = time.perf_counter()
            response = requests.post(url, json=BODY, headers=headers, timeout=60)
            e2e_ms.append((time.perf_counter() - started) * 1000)
            record = response.json()
            assert record["task_status"] == "finished"
            # The same request's own run (TaskStarted to its end, as the server timed it) taken out:
            # what is left is HTTP, admission, the queue hand-off and the answer, free of engine noise.
            outside_ms.append(e2e_ms[-1] - (record["finish_mills"] - record["start_mills"]))
    finally:
        server.stop()
    engine_median, e2e_median = statistics.median(engine_ms), statistics.median(e2e_ms)
    return {
        "requests": count,
        "engine_median_ms": round(engine_median, 1),
        "request_to_finished_median_ms": round(e2e_median, 1),
        "server_overhead_median_ms": round(e2e_median - engine_median, 1),
        "outside_task_run_median_ms": round(statistics.median(outside_ms), 1),
        "note": "overhead = HTTP, validation, durable log appends (TaskQueued/Started/Progress x4/Finished), "
        "the follower (read model, publish), PNG encode + metadata + file write, read-model fetch",
    }


def bench_burst(tmp: Path, models: Path, count: int = 50, rounds: int = 3) -> dict[str, object]:
    """`count` async submits released at once (a barrier), `rounds` times: p50/p95 of one submit's latency.

    The queue bound is above the burst so every submit is accepted; the demo tasks run meanwhile,
    as they would on a busy server. Each client connects before the barrier (a pool's kept-alive
    connection): 50 simultaneous TCP handshakes measure the client's threads, not the server.
    """
    server = ServerProcess(tmp / "burst", models, "--queue-size", str(count * (rounds + 1))).start()
    url = server.url + "/v1/engine/generate/"
    body = {**BODY, "async_process": True}
    latencies: list[float] = []
    statuses: list[int] = []
    try:
        # Warm-up, waited for: the first task loads the model (seconds of the runner holding the GIL).
        requests.post(url, json=BODY, headers={"Accept": "application/json"}, timeout=120)
        for _ in range(rounds):
            barrier = threading.Barrier(count)

            def one(barrier: threading.Barrier = barrier) -> None:
                with requests.Session() as session:
                    session.get(server.url + "/health", timeout=60)  # connected first, as a client pool is
                    barrier.wait()
                    started = time.perf_counter()
                    response = session.post(url, json=body, timeout=60)
                    latencies.append((time.perf_counter() - started) * 1000)
                    statuses.append(response.status_code)

            threads = [threading.Thread(target=one) for _ in range(count)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            time.sleep(0.5)
    finally:
        server.stop()
    ordered = sorted(latencies)
    return {
        "concurrent_submits": count,
        "rounds": rounds,
        "accepted": statuses.count(200),
        "p50_ms": round(ordered[len(ordered) // 2], 1),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1], 1),
        "max_ms": round(ordered[-1], 1),
    }


def bench_saver(tmp: Path, models: Path, count: int = 8) -> dict[str, object]:
    """Back-to-back 1024x1024 tasks: how long saving one takes (PNG encode + metadata + write, from its
    first "saving" progress to its TaskFinished) and how long the device waits between two tasks
    (from the hand-off to the saver to the next task's TaskStarted). The saver thread takes the first off
    the second: the gap stays small while the saving goes on beside the next task."""
    server = ServerProcess(tmp / "saver", models).start()
    body = {**BODY, "aspect_ratios_selection": "1024*1024", "overwrite_step": 2, "async_process": True}
    try:
        url = server.url + "/v1/engine/generate/"
        requests.post(url, json={**body, "async_process": False}, headers={"Accept": "application/json"}, timeout=300)
        ids = [requests.post(url, json=body, timeout=30).json()["task_id"] for _ in range(count)]
        for task_id in ids:
            deadline = time.monotonic() + 600
            while not requests.get(f"{server.url}/tasks/{task_id}", timeout=10).json().get("finish_mills"):
                assert time.monotonic() < deadline
                time.sleep(0.1)
        timeline = []
        for task_id in ids:
            events = requests.get(f"{server.url}/tasks/{task_id}/events", timeout=10).json()
            # The device's part ends with the VAE decode; the saver's first event says it took over.
            sampled = min(e["at_ms"] for e in events if e["type"] == "TaskProgress" and e.get("stage") == "saving")
            started = next(e["at_ms"] for e in events if e["type"] == "TaskStarted")
            ended = next(e["at_ms"] for e in events if e["type"] == "TaskFinished")
            timeline.append((started, sampled, ended))
    finally:
        server.stop()
    timeline.sort()
    saving = [ended - sampled for _, sampled, ended in timeline]
    gaps = [nxt[0] - prev[1] for prev, nxt in zip(timeline, timeline[1:], strict=False)]
    return {
        "tasks": count,
        "saving_median_ms": statistics.median(saving),
        "device_gap_median_ms": statistics.median(gaps),
        "tasks_per_minute": round(60_000 * (count - 1) / (timeline[-1][0] - timeline[0][0]), 1),
        "note": "1024x1024 demo images, 2 steps; the gap is what the device waits between tasks "
        "(planning, model check, TaskStarted), the saving happens beside the next task",
    }


MIXED_SHAPES: Final = ("128*128", "192*128", "128*192", "64*64")


def _tasks_a_minute(server: ServerProcess, bodies: list[dict[str, object]]) -> float:
    """Submit every body at once (async), wait for all: tasks a minute from the first TaskStarted
    to the last TaskFinished."""
    url = server.url + "/v1/engine/generate/"
    ids = [requests.post(url, json=body, timeout=30).json()["task_id"] for body in bodies]
    records = []
    for task_id in ids:
        deadline = time.monotonic() + 900
        while not (record := requests.get(f"{server.url}/tasks/{task_id}", timeout=10).json()).get("finish_mills"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert record["task_status"] == "finished", record
        records.append(record)
    span_ms = max(r["finish_mills"] for r in records) - min(r["start_mills"] for r in records)
    return round(60_000 * len(bodies) / span_ms, 1)


def bench_task_batching(tmp: Path, models: Path, count: int = 8) -> dict[str, object]:
    """`count` one-image tasks submitted at once to a server with --max-batch 1 and 8 (one runner):
    tasks a minute, same shape and mixed shapes (continuous batching across tasks: the queued ones
    whose batch key matches join the running batch; other shapes wait for their own)."""
    body = {**BODY, "aspect_ratios_selection": "128*128", "overwrite_step": 30, "async_process": True}
    same = [{**body, "image_seed": n} for n in range(count)]
    mixed = [{**body, "image_seed": n, "aspect_ratios_selection": MIXED_SHAPES[n % len(MIXED_SHAPES)]}
             for n in range(count)]  # fmt: skip
    found: dict[str, object] = {"tasks": count}
    for max_batch in (1, 8):
        server = ServerProcess(tmp / f"batching-{max_batch}", models, "--max-batch", str(max_batch)).start()
        try:
            for shape in MIXED_SHAPES:  # warm-up: the model load, and each shape once
                requests.post(server.url + "/v1/engine/generate/", timeout=300, headers={"Accept": "application/json"},
                              json={**body, "async_process": False, "aspect_ratios_selection": shape})  # fmt: skip
            found[f"max_batch_{max_batch}_same_shape_tasks_per_minute"] = _tasks_a_minute(server, same)
            found[f"max_batch_{max_batch}_mixed_shapes_tasks_per_minute"] = _tasks_a_minute(server, mixed)
        finally:
            server.stop()
    for kind in ("same_shape", "mixed_shapes"):
        one, eight = found[f"max_batch_1_{kind}_tasks_per_minute"], found[f"max_batch_8_{kind}_tasks_per_minute"]
        found[f"{kind}_ratio"] = round(float(eight) / float(one), 2)  # type: ignore[arg-type]
    found["note"] = (
        f"demo model, 30 steps, one runner on 2 shared CPU cores; same shape 128x128, mixed: {', '.join(MIXED_SHAPES)}"
    )
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=20)
    parts_help = "run one part (results.json keeps the others)"
    parts = ["append", "overhead", "history", "burst", "fleet", "saver", "batching"]
    parser.add_argument("--only", choices=parts, help=parts_help)
    args = parser.parse_args()
    out = ROOT / "bench" / "results.json"
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        models = tmp / "models"
        ensure_demo_checkpoint(models / "checkpoints")
        parts = {
            "append": lambda: bench_append(tmp),
            "overhead": lambda: bench_overhead(tmp, models, args.requests),
            "history": lambda: bench_history(tmp, models, args.tasks),
            "burst": lambda: bench_burst(tmp, models),
            "fleet": lambda: bench_fleet(tmp, models, 24),  # bench/fleet.py
            "saver": lambda: bench_saver(tmp, models),
            "batching": lambda: bench_task_batching(tmp, models),
        }
        results = json.loads(out.read_text()) if args.only and out.exists() else {}
        results.update({name: run() for name, run in parts.items() if args.only in (None, name)})
    print(json.dumps(results, indent=2))
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
