"""The runner itself, with a fake engine: commands in, events out, on a real SQLite log and data dir."""

from __future__ import annotations

import errno
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from fooocus_es.engine.planning import plan as planning
from fooocus_es.engine.planning import presets
from fooocus_es.engine.planning.plan_types import GenerationPlan
from fooocus_es.events.sqlite import SqliteEventLog
from fooocus_es.events.store import EventStore
from fooocus_es.events.types import (
    TaskCancelled,
    TaskFailed,
    TaskFinished,
    TaskProgress,
    TaskQueued,
    TaskSkipped,
    TaskStarted,
    TaskStopped,
    event_type,
)
from fooocus_es.fleet.connection import NatsUnavailable
from fooocus_es.media.blobs import LocalBlobs
from fooocus_es.ops.storage import StorageHealth
from fooocus_es.runner.queue import LocalCommandQueue
from fooocus_es.runner.worker import Runner
from fooocus_es.tasks.commands import Generate, Skip, Stop


@dataclass
class FakeImage:
    image_index: int
    seed: int
    image: Image.Image


@dataclass
class FakeEngine:
    """EngineLike without torch: `plan.steps` steps per image; `at_step` runs a callback mid-task."""

    store: Any = None
    at_step: dict[tuple[int, int], Callable[[], None]] = field(default_factory=dict)
    fail: Exception | None = None
    prepared: list[str] = field(default_factory=list)

    def prepare(self, plan: GenerationPlan) -> None:
        self.prepared.append(plan.task_id)

    def generate(self, plan: GenerationPlan, hooks: Any) -> tuple[list[FakeImage], str]:
        if self.fail is not None:
            raise self.fail
        images: list[FakeImage] = []
        for index, seed in enumerate(plan.seeds):
            skipped = False
            for step in range(1, plan.steps + 1):
                hooks.on_step(index, step, plan.steps, None)
                if (index, step) in self.at_step:
                    self.at_step[(index, step)]()
                action = hooks.poll_control()
                if action == "stop":
                    return images, "stopped"
                if action == "skip":
                    skipped = True
                    break
            if not skipped:
                images.append(FakeImage(index, seed, Image.new("RGB", (plan.width, plan.height), (index * 40, 0, 0))))
        return images, "finished"


def params(**overrides: Any) -> dict[str, Any]:
    body = {"prompt": "a cat", "performance_selection": "Lightning", "aspect_ratios_selection": "64*64", **overrides}
    return planning.finalize(planning.merge_layers(body, presets.preset_request_defaults(presets.load_preset("demo"))))


@dataclass
class Rig:
    log: SqliteEventLog
    queue: LocalCommandQueue
    engine: FakeEngine
    runner: Runner
    data_dir: Path

    def queue_task(self, task_id: str, **overrides: Any) -> Generate:
        request = params(**overrides)
        self.log.append(TaskQueued(task_id=task_id, at_ms=1, params=request), expected_version=0)
        return Generate(task_id=task_id, params=request)

    def types(self, task_id: str) -> list[str]:
        return [event_type(e.event) for e in self.log.read(task_id=task_id)]

    def events(self, task_id: str) -> list[Any]:
        return [e.event for e in self.log.read(task_id=task_id)]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    log = SqliteEventLog(tmp_path / "outputs" / "db.sqlite3")
    queue = LocalCommandQueue()
    engine = FakeEngine()
    runner = Runner(EventStore(log), queue, lambda: engine, tmp_path, "cpu")
    yield Rig(log, queue, engine, runner, tmp_path)
    runner.shutdown(timeout=5)
    log.close()


def test_a_task_runs_to_finished_with_structured_progress_and_its_files(rig: Rig) -> None:
    rig.runner.run(rig.queue_task("t", image_number=2))
    types = rig.types("t")
    assert types[:2] == ["TaskQueued", "TaskStarted"] and types[-1] == "TaskFinished"
    sampling = [e for e in rig.events("t") if isinstance(e, TaskProgress) and e.stage == "sampling"]
    steps = sampling[0].steps
    assert steps > 0 and len(sampling) == 2 * steps
    assert [(e.image_index, e.step) for e in sampling[:2]] == [(0, 1), (0, 2)] and sampling[-1].image_index == 1
    assert all(e.image_count == 2 and e.message.startswith("Sampling step") for e in sampling)
    assert [e.percent for e in sampling] == sorted(e.percent for e in sampling) and sampling[0].percent == 13
    stages = [e.stage for e in rig.events("t") if isinstance(e, TaskProgress)]
    assert stages[0] == "loading" and stages[-2:] == ["saving", "saving"]
    finished = rig.events("t")[-1]
    assert isinstance(finished, TaskFinished) and len(finished.result) == 2
    assert all((rig.data_dir / path).is_file() for path in finished.result)
    assert rig.log.version("t") == len(types) and rig.runner.running_task is None


def test_stop_keeps_the_images_made_so_far(rig: Rig) -> None:
    command = rig.queue_task("t", image_number=2)
    rig.engine.at_step[(1, 1)] = lambda: rig.runner.deliver(Stop(task_id="t"))
    rig.runner.run(command)
    stopped = rig.events("t")[-1]
    assert isinstance(stopped, TaskStopped) and len(stopped.result) == 1


def test_skip_abandons_one_image_and_the_task_goes_on(rig: Rig) -> None:
    command = rig.queue_task("t", image_number=2)
    rig.engine.at_step[(0, 1)] = lambda: rig.runner.deliver(Skip(task_id="t"))
    rig.runner.run(command)
    events = rig.events("t")
    assert [e.image_index for e in events if isinstance(e, TaskSkipped)] == [0]
    assert isinstance(events[-1], TaskFinished) and len(events[-1].result) == 1


def test_control_for_another_task_is_not_taken(rig: Rig) -> None:
    command = rig.queue_task("t")
    answers: list[bool] = []
    rig.engine.at_step[(0, 1)] = lambda: answers.append(rig.runner.deliver(Stop(task_id="other")))
    rig.runner.run(command)
    assert answers == [False] and rig.types("t")[-1] == "TaskFinished"
    assert rig.runner.deliver(Stop(task_id="t")) is False  # nothing runs now


def test_a_task_cancelled_before_it_started_is_never_started(rig: Rig) -> None:
    command = rig.queue_task("t")  # claimed by the runner, then cancelled before its TaskStarted
    rig.log.append(TaskCancelled(task_id="t", at_ms=2), expected_version=1)
    rig.runner.run(command)
    assert rig.types("t") == ["TaskQueued", "TaskCancelled"] and rig.engine.prepared == []


def test_a_task_ended_elsewhere_mid_run_is_abandoned_without_another_event(rig: Rig) -> None:
    command = rig.queue_task("t")

    def end_elsewhere() -> None:
        rig.log.append(TaskFailed(task_id="t", at_ms=5, error_type="Interrupted", message="elsewhere"))

    rig.engine.at_step[(0, 1)] = end_elsewhere
    rig.runner.run(command)
    assert rig.types("t")[-1] == "TaskFailed" and rig.types("t").count("TaskFailed") == 1
    assert rig.runner.running_task is None


def test_a_failure_is_a_value_and_the_next_task_runs(rig: Rig) -> None:
    rig.engine.fail = ValueError("no such thing")
    rig.runner.run(rig.queue_task("bad"))
    failed = rig.events("bad")[-1]
    assert isinstance(failed, TaskFailed) and (failed.error_type, failed.message) == ("ValueError", "no such thing")
    rig.engine.fail = None
    rig.runner.run(rig.queue_task("good"))
    assert rig.types("good")[-1] == "TaskFinished"


def test_the_runner_thread_claims_in_order_and_acks_each_claim(rig: Rig) -> None:
    for task_id in ("a", "b", "c"):
        rig.queue.put(rig.queue_task(task_id))
    rig.runner.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(rig.types(t)[-1] != "TaskFinished" for t in "abc"):
        time.sleep(0.02)
    assert all(rig.types(t)[-1] == "TaskFinished" for t in "abc")
    started = [e.seq for e in rig.log.read() if event_type(e.event) == "TaskStarted"]
    assert started == sorted(started) and [e.event.task_id for e in rig.log.read() if e.seq in started] == list("abc")
    assert rig.queue.pending() == [] and rig.queue.claimed() == []


def test_shutdown_while_running_fails_the_task_as_interrupted(rig: Rig) -> None:
    command = rig.queue_task("t")
    rig.queue.put(command)
    in_step = threading.Event()
    rig.engine.at_step[(0, 1)] = lambda: (in_step.set(), time.sleep(0.2))
    rig.runner.start()
    assert in_step.wait(10)
    rig.runner.shutdown(timeout=10)
    failed = rig.events("t")[-1]
    assert isinstance(failed, TaskFailed) and failed.error_type == "Interrupted"
    assert not rig.runner.alive


# -- storage faults: the runner survives them, retries what is safe, and leaves no orphan files --------
@dataclass
class FlakyLog:
    """A real log whose appends fail with a storage error while `failing(event)` says so.

    `landing` makes a failing append commit first and then raise (the error came after the write).
    """

    log: SqliteEventLog
    failing: Callable[[Any], bool] = lambda event: False
    error: Exception = field(default_factory=lambda: sqlite3.OperationalError("database or disk is full"))
    landing: bool = False
    refused: int = 0

    def append(self, event: Any, expected_version: int | None = None) -> int:
        if self.failing(event):
            self.refused += 1
            if self.landing:
                self.log.append(event, expected_version)
            raise self.error
        return self.log.append(event, expected_version)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.log, name)


@pytest.fixture
def flaky(tmp_path: Path) -> Iterator[tuple[Rig, FlakyLog, StorageHealth]]:
    log = SqliteEventLog(tmp_path / "outputs" / "db.sqlite3")
    wrapper = FlakyLog(log)
    health = StorageHealth({"outputs": tmp_path / "outputs"}, log.check_writable)
    engine = FakeEngine()
    queue = LocalCommandQueue()
    runner = Runner(EventStore(wrapper), queue, lambda: engine, tmp_path, "cpu", storage=health)  # type: ignore[arg-type]
    yield Rig(log, queue, engine, runner, tmp_path), wrapper, health
    runner.shutdown(timeout=5)
    log.close()


def output_files(data_dir: Path) -> list[Path]:
    return [path for path in (data_dir / "outputs").rglob("*.png")]


def test_a_transient_append_error_is_retried_and_the_task_finishes(flaky: tuple[Rig, FlakyLog, StorageHealth]) -> None:
    rig, log, health = flaky
    log.failing = lambda event: isinstance(event, TaskProgress) and log.refused < 2
    rig.runner.run(rig.queue_task("t"))
    assert rig.types("t")[-1] == "TaskFinished" and log.refused == 2
    assert health.faults() == []  # the append that worked cleared the fault


def test_a_lasting_storage_error_fails_the_task_once_storage_is_back_and_leaves_no_files(
    flaky: tuple[Rig, FlakyLog, StorageHealth],
) -> None:
    rig, log, health = flaky
    seen: list[list[Any]] = []
    # The terminal append keeps failing (a full disk), and the first tries of TaskFailed too.
    log.failing = lambda event: isinstance(event, TaskFinished) or (isinstance(event, TaskFailed) and log.refused < 5)
    original = log.append

    def watching(event: Any, expected_version: int | None = None) -> int:
        seen.append(health.faults())
        return original(event, expected_version)

    log.append = watching  # type: ignore[method-assign]
    rig.runner.run(rig.queue_task("t", image_number=2))
    failed = rig.events("t")[-1]
    assert isinstance(failed, TaskFailed) and failed.error_type == "StorageError"
    assert "database or disk is full" in failed.message and "task log" in failed.message
    assert output_files(rig.data_dir) == []  # both saved images were removed: no record names them
    assert any(f and f[0].kind == "full" and f[0].place == "log" for f in seen)  # reported while it lasted
    assert health.faults() == []
    log.failing = lambda event: False
    rig.runner.run(rig.queue_task("next"))  # the runner goes on
    assert rig.types("next")[-1] == "TaskFinished" and len(output_files(rig.data_dir)) == 1


def test_an_unreachable_log_is_waited_out_past_the_quick_tries(flaky: tuple[Rig, FlakyLog, StorageHealth]) -> None:
    """A fleet's NATS server restarting: the terminal append fails longer than a full disk would be
    given (QUICK_TRIES), and the task still finishes once the log answers again."""
    rig, log, health = flaky
    log.error = NatsUnavailable("nats: no answer from nats://127.0.0.1:4222 (nats: timeout)")
    seen: list[list[Any]] = []
    log.failing = lambda event: isinstance(event, TaskFinished) and (seen.append(health.faults()) or log.refused < 5)
    rig.runner.run(rig.queue_task("t"))
    assert rig.types("t").count("TaskFinished") == 1 and rig.types("t")[-1] == "TaskFinished"
    assert log.refused == 5 and len(output_files(rig.data_dir)) == 1
    assert any(f and f[0].kind == "unreachable" and "is unreachable" in f[0].describe() for f in seen)
    assert health.faults() == []


def test_a_retried_append_that_had_landed_is_not_written_twice(flaky: tuple[Rig, FlakyLog, StorageHealth]) -> None:
    rig, log, _health = flaky
    log.landing = True  # the commit went through, then the error was raised
    log.failing = lambda event: isinstance(event, TaskFinished) and log.refused < 1
    rig.runner.run(rig.queue_task("t"))
    assert rig.types("t").count("TaskFinished") == 1 and rig.types("t")[-1] == "TaskFinished"
    assert len(output_files(rig.data_dir)) == 1  # the finished task keeps its image


def test_a_save_failing_part_way_leaves_no_orphan_image(
    flaky: tuple[Rig, FlakyLog, StorageHealth], monkeypatch: pytest.MonkeyPatch
) -> None:
    rig, _log, health = flaky
    real_create = rig.runner.blobs.create
    calls = [0]

    def create(key: str, data: bytes) -> bool:
        calls[0] += 1
        if calls[0] > 1:  # the first image is written, every later write finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_create(key, data)

    monkeypatch.setattr(rig.runner.blobs, "create", create)
    rig.runner.run(rig.queue_task("t", image_number=2))
    failed = rig.events("t")[-1]
    assert isinstance(failed, TaskFailed) and failed.error_type == "StorageError"
    assert "outputs/" in failed.message and "No space left" in failed.message
    assert output_files(rig.data_dir) == []
    assert [f.kind for f in health.faults()] == ["full"]  # outputs/ stays reported until a write works
    assert health.probe() == []  # the real folder is writable: the probe clears it


def test_the_runner_thread_survives_an_unexpected_append_error(flaky: tuple[Rig, FlakyLog, StorageHealth]) -> None:
    rig, log, _health = flaky
    log.error = RuntimeError("a bug, not storage")
    log.failing = lambda event: isinstance(event, TaskStarted) and event.task_id == "a"
    for task_id in ("a", "b"):
        rig.queue.put(rig.queue_task(task_id))
    rig.runner.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and rig.types("b")[-1] != "TaskFinished":
        time.sleep(0.02)
    assert rig.types("b")[-1] == "TaskFinished" and rig.runner.alive
    # Its command is acked: the task ends failed with the bug named, rather than "queued" for ever.
    assert rig.types("a") == ["TaskQueued", "TaskFailed"]
    failed = rig.events("a")[-1]
    assert isinstance(failed, TaskFailed) and failed.error_type == "RunnerError" and "a bug" in failed.message


def test_shutdown_ends_a_wait_for_storage(flaky: tuple[Rig, FlakyLog, StorageHealth]) -> None:
    rig, log, _health = flaky
    log.failing = lambda event: True  # nothing can be written, not even TaskStarted
    rig.queue.put(rig.queue_task("t"))
    rig.runner.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and log.refused < 2:
        time.sleep(0.02)
    started = time.monotonic()
    rig.runner.shutdown(timeout=10)
    assert not rig.runner.alive and time.monotonic() - started < 3
    assert rig.types("t") == ["TaskQueued"]  # still queued in the log: a restart runs it


def test_a_redelivered_task_is_taken_over_once_then_failed_interrupted(rig: Rig) -> None:
    """A fleet's queue hands a command out again when its runner went silent (attempt 2, 3, ...)."""
    command = rig.queue_task("t")
    rig.log.append(TaskStarted(task_id="t", at_ms=2, device="gone"), expected_version=1)  # the runner that died
    rig.log.append(TaskProgress(task_id="t", at_ms=3, percent=20, message=""), expected_version=2)
    rig.runner.run(command, attempt=2)  # retry_interrupted=1: run again, after the dead runner's events
    starts = [e for e in rig.events("t") if isinstance(e, TaskStarted)]
    assert [s.attempt for s in starts] == [1, 2] and rig.types("t")[-1] == "TaskFinished"

    again = rig.queue_task("u")
    rig.log.append(TaskStarted(task_id="u", at_ms=2), expected_version=1)
    rig.log.append(TaskStarted(task_id="u", at_ms=3, attempt=2), expected_version=2)
    rig.runner.run(again, attempt=3)  # it took two runners down: it ends, it does not loop
    failed = rig.events("u")[-1]
    assert isinstance(failed, TaskFailed) and failed.error_type == "Interrupted" and "2 times" in failed.message
    assert rig.types("u").count("TaskStarted") == 2


def test_a_delivery_lost_in_flight_does_not_count_as_a_run(rig: Rig) -> None:
    """Delivery 3 of a task only one runner started (delivery 2 went to a pull that had expired)."""
    command = rig.queue_task("t")
    rig.log.append(TaskStarted(task_id="t", at_ms=2, device="gone"), expected_version=1)
    rig.runner.run(command, attempt=3)
    starts = [e for e in rig.events("t") if isinstance(e, TaskStarted)]
    assert [s.attempt for s in starts] == [1, 2] and rig.types("t")[-1] == "TaskFinished"


def test_a_redelivered_command_of_an_ended_task_does_nothing(rig: Rig) -> None:
    command = rig.queue_task("t")
    rig.log.append(TaskCancelled(task_id="t", at_ms=2), expected_version=1)
    rig.runner.run(command, attempt=2)
    assert rig.types("t") == ["TaskQueued", "TaskCancelled"] and rig.engine.prepared == []


def test_a_zombie_runner_is_fenced_by_the_version_check(rig: Rig) -> None:
    """The runner that looked dead comes back after another one took its task over: its next
    write is refused and it abandons the task without a second terminal event."""
    command = rig.queue_task("t")

    def taken_over() -> None:  # mid-task, another runner appends its own TaskStarted
        rig.log.append(TaskStarted(task_id="t", at_ms=5, attempt=2))

    rig.engine.at_step[(0, 1)] = taken_over
    rig.runner.run(command)
    types = rig.types("t")
    assert types.count("TaskStarted") == 2 and not any(t in types for t in ("TaskFinished", "TaskFailed"))


class SlowBlobs(LocalBlobs):
    """Local files whose writes take a while (a slow disk, or a 1024x1024 PNG's encode)."""

    def __init__(self, data_dir: Path, delay_s: float) -> None:
        super().__init__(data_dir)
        self.delay_s = delay_s
        self.writers: list[str] = []

    def create(self, key: str, data: bytes) -> bool:
        self.writers.append(threading.current_thread().name)
        time.sleep(self.delay_s)
        return super().create(key, data)


def slow_saving_rig(tmp_path: Path, delay_s: float) -> tuple[Rig, SlowBlobs]:
    log = SqliteEventLog(tmp_path / "outputs" / "db.sqlite3")
    queue = LocalCommandQueue()
    blobs = SlowBlobs(tmp_path, delay_s=delay_s)
    runner = Runner(EventStore(log), queue, lambda: FakeEngine(), tmp_path, "cpu", blobs=blobs)
    return Rig(log, queue, FakeEngine(), runner, tmp_path), blobs


def test_the_next_task_starts_on_the_device_while_the_last_ones_images_are_saved(tmp_path: Path) -> None:
    rig, blobs = slow_saving_rig(tmp_path, delay_s=0.6)
    log, queue, runner = rig.log, rig.queue, rig.runner
    try:
        for task_id in ("a", "b", "c"):
            queue.put(rig.queue_task(task_id))
        runner.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(rig.types(t)[-1] == "TaskFinished" for t in "abc"):
            time.sleep(0.02)
        envelopes = list(log.read())
        seq = {(e.event.task_id, event_type(e.event)): e.seq for e in envelopes}
        assert all(rig.types(t)[-1] == "TaskFinished" for t in "abc")
        assert seq[("b", "TaskStarted")] < seq[("a", "TaskFinished")]  # b sampled while a was being saved
        assert seq[("a", "TaskFinished")] < seq[("b", "TaskFinished")] < seq[("c", "TaskFinished")]  # one saver
        assert blobs.writers and all(name == "runner-cpu-save_0" for name in blobs.writers)  # off the device's thread
        assert len(output_files(tmp_path)) == 3
    finally:
        runner.shutdown(timeout=10)
        log.close()


def test_shutdown_waits_for_the_saver_to_store_what_the_device_finished(tmp_path: Path) -> None:
    rig, blobs = slow_saving_rig(tmp_path, delay_s=0.5)
    log, queue, runner = rig.log, rig.queue, rig.runner
    queue.put(rig.queue_task("a"))
    runner.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not blobs.writers:  # sampled; the saver writes its image now
        time.sleep(0.01)
    runner.shutdown(timeout=10)
    assert rig.types("a")[-1] == "TaskFinished" and len(output_files(tmp_path)) == 1
    log.close()


@dataclass
class SideBySideEngine(FakeEngine):
    """Images stepped side by side, as a batched task (--max-batch) reports them."""

    def generate(self, plan: GenerationPlan, hooks: Any) -> tuple[list[FakeImage], str]:
        for step in range(1, plan.steps + 1):
            for index in range(len(plan.seeds)):
                hooks.on_step(index, step, plan.steps, None)
                hooks.poll_control()
        images = [FakeImage(i, seed, Image.new("RGB", (plan.width, plan.height))) for i, seed in enumerate(plan.seeds)]
        return images, "finished"


def test_a_batched_tasks_percent_only_goes_up(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "outputs" / "db.sqlite3")
    engine = SideBySideEngine()
    runner = Runner(EventStore(log), LocalCommandQueue(), lambda: engine, tmp_path, "cpu")
    rig = Rig(log, LocalCommandQueue(), engine, runner, tmp_path)
    runner.run(rig.queue_task("t", image_number=3))
    sampling = [e.percent for e in rig.events("t") if isinstance(e, TaskProgress) and e.stage == "sampling"]
    total = len(sampling)  # one event an image-step: the last one as one image after another ends
    assert sampling == sorted(sampling) and sampling[0] == 13 and sampling[-1] == int(13 + 87 * (total - 1) / total)
    log.close()


def test_a_tasks_previews_are_paced_to_the_runners_interval() -> None:
    """At most one preview per interval for the whole task: its images share one stream."""
    from types import SimpleNamespace

    from fooocus_es.runner.worker import _Hooks

    runner = SimpleNamespace(preview_interval_s=3600.0)
    hooks = _Hooks(runner, "t1", 2)  # type: ignore[arg-type]
    assert hooks.wants_preview(0) and not hooks.wants_preview(0) and not hooks.wants_preview(1)
    runner.preview_interval_s = 0.0
    assert hooks.wants_preview(1) and hooks.wants_preview(1)
