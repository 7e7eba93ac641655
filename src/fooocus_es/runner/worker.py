"""The runner: one thread per device that takes queued tasks in order, runs the engine, emits events.

Commands: submit (generate), stop / skip (the running task), cancel (a pending task by id).
Everything blocking — torch, image encoding, file writes, SQLite appends — happens on this thread.
"""

from __future__ import annotations

import base64
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import structlog

from fooocus_es.engine.diffusion.pipeline import GenerationFailed
from fooocus_es.engine.models.store import ModelMissing, ModelUnsupported
from fooocus_es.engine.models.upscalers import UpscalerMissing, UpscalerUnsupported
from fooocus_es.engine.planning.plan import build_plan
from fooocus_es.engine.planning.plan_types import GenerationPlan
from fooocus_es.engine.planning.styles import StyleBook
from fooocus_es.events.store import EventStore
from fooocus_es.events.types import (
    Event,
    TaskCancelled,
    TaskFailed,
    TaskFinished,
    TaskProgress,
    TaskSkipped,
    TaskStarted,
    TaskStopped,
)
from fooocus_es.media.metadata import parameters_text
from fooocus_es.media.outputs import encode_image, save_output

Control = Literal["stop", "skip"]
# Failures a user can act on from the message alone (missing file, unsupported combination).
EXPECTED_FAILURES: tuple[type[Exception], ...] = (
    ModelMissing,
    ModelUnsupported,
    UpscalerMissing,
    UpscalerUnsupported,
    GenerationFailed,
    ValueError,
)


def now_ms() -> int:
    return int(time.time() * 1000)


class EngineLike(Protocol):
    """What the runner needs from engine.pipeline.Engine (kept narrow so runners can be remote later)."""

    store: Any

    def prepare(self, plan: GenerationPlan) -> None: ...
    def generate(self, plan: GenerationPlan, hooks: Any) -> tuple[list[Any], str]: ...


@dataclass
class Job:
    task_id: str
    params: dict[str, Any]


# Downloads the plan's missing model files it knows URLs for; reports progress as text lines.
ModelFetcher = Callable[[GenerationPlan, Callable[[str], None]], None]


@dataclass
class _Current:
    task_id: str
    stop: bool = False
    skip: bool = False
    image_index: int = 0
    skipped: list[int] = field(default_factory=list)


class Runner:
    def __init__(
        self,
        store: EventStore,
        engine_factory: Callable[[], EngineLike],
        data_dir: Path,
        device: str,
        warm_model: str | None = None,
        style_book: StyleBook | None = None,
        fetch_models: ModelFetcher | None = None,
    ) -> None:
        self.store = store
        self.engine_factory = engine_factory
        self.data_dir = data_dir
        self.device = device
        self.warm_model = warm_model
        self.style_book = style_book or StyleBook(data_dir)
        self.fetch_models = fetch_models
        self._engine: EngineLike | None = None
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._current: _Current | None = None
        self._shutdown = False
        self._thread = threading.Thread(target=self._loop, name=f"runner-{device}", daemon=True)

    # -- commands (any thread) ------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        with self._cond:
            self._queue.append(job)
            self._cond.notify()

    def control(self, action: Control) -> str | None:
        """Stop or skip the running task; returns its id, or None when nothing runs."""
        with self._cond:
            if self._current is None:
                return None
            if action == "stop":
                self._current.stop = True
            else:
                self._current.skip = True
            return self._current.task_id

    def cancel(self, task_id: str) -> Literal["cancelled", "stopping", "unknown"]:
        """Cancel a pending task (removed from the queue) or stop it if it is already running."""
        with self._cond:
            for job in self._queue:
                if job.task_id == task_id:
                    self._queue.remove(job)
                    break
            else:
                if self._current is not None and self._current.task_id == task_id:
                    self._current.stop = True
                    return "stopping"
                return "unknown"
        self.store.emit(TaskCancelled(task_id=task_id, at_ms=now_ms()))
        return "cancelled"

    def shutdown(self, timeout: float = 30.0) -> None:
        with self._cond:
            self._shutdown = True
            if self._current is not None:
                self._current.stop = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def busy(self) -> bool:
        return self._current is not None

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- the worker thread ----------------------------------------------------------------------
    def _next_job(self) -> Job | None:
        with self._cond:
            while not self._queue and not self._shutdown:
                self._cond.wait()
            if self._shutdown:
                return None
            job = self._queue.popleft()
            self._current = _Current(job.task_id)
            return job

    def _loop(self) -> None:
        self._warm_up()
        while (job := self._next_job()) is not None:
            try:
                self._run(job)
            finally:
                with self._cond:
                    self._current = None

    def _warm_up(self) -> None:
        """Import torch and load the server preset's model before the first task asks for it."""
        if self.warm_model is None:
            return
        try:
            self._get_engine().store.load_pipeline(self.warm_model)
        except Exception as exc:  # a missing model is reported per task and in /health
            structlog.get_logger("fooocus_es.runner").warning(
                "runner.warm_up_failed", model=self.warm_model, error=str(exc)
            )

    def _emit(self, event: Event) -> None:
        self.store.emit(event)

    def _run(self, job: Job) -> None:
        # Bound here, not at construction: structlog is configured by the app after the runner exists.
        task_log = structlog.get_logger("fooocus_es.runner").bind(device=self.device, task_id=job.task_id)
        self._emit(TaskStarted(task_id=job.task_id, at_ms=now_ms(), device=self.device))
        task_log.info("task.started")
        started = time.perf_counter()
        try:
            plan = build_plan(job.task_id, job.params, data_dir=self.data_dir, styles=self.style_book.styles())
            if plan.notes:
                task_log.warning("task.notes", notes=list(plan.notes))
            if self.fetch_models is not None:  # files a preset or performance mode knows a URL for
                self.fetch_models(plan, lambda message: self._progress(job.task_id, 1, message))
            self._progress(job.task_id, 2, "Loading models ...")
            engine = self._get_engine()
            engine.prepare(plan)
            self._progress(job.task_id, 13, f"Preparing task 1/{len(plan.seeds)} ...")
            hooks = _Hooks(self, job.task_id, len(plan.seeds))
            images, status = engine.generate(plan, hooks)
            result = self._save(job, plan, images)
        except Exception as exc:  # a task's failure is a value: it never takes the runner down
            message = str(exc) or type(exc).__name__
            if isinstance(exc, EXPECTED_FAILURES):  # the message says it all; no traceback
                task_log.warning("task.failed", error_type=type(exc).__name__, error=message)
            else:
                task_log.exception("task.failed", error=message)
            self._emit(TaskFailed(task_id=job.task_id, at_ms=now_ms(), error_type=type(exc).__name__, message=message))
            return
        elapsed = round(time.perf_counter() - started, 3)
        if self._shutting_down() and status == "stopped":
            self._emit(
                TaskFailed(
                    task_id=job.task_id, at_ms=now_ms(), error_type="Interrupted",
                    message="the server shut down while the task was running", result=result,
                )
            )  # fmt: skip
        elif status == "stopped":
            self._emit(TaskStopped(task_id=job.task_id, at_ms=now_ms(), result=result))
        else:
            self._emit(TaskFinished(task_id=job.task_id, at_ms=now_ms(), result=result, notes=list(plan.notes)))
        task_log.info("task.ended", status=status, images=len(result), seconds=elapsed)

    def _shutting_down(self) -> bool:
        with self._cond:
            return self._shutdown

    def _get_engine(self) -> EngineLike:
        if self._engine is None:
            self._engine = self.engine_factory()
        return self._engine

    def _progress(self, task_id: str, percent: int, message: str, step: int = 0, preview: str | None = None) -> None:
        self._emit(
            TaskProgress(task_id=task_id, at_ms=now_ms(), percent=percent, message=message, step=step, preview=preview)
        )

    def _save(self, job: Job, plan: GenerationPlan, images: list[Any]) -> list[str]:
        fmt = job.params["output_format"]
        result: list[str] = []
        for number, generated in enumerate(images, start=1):
            self._progress(job.task_id, 100, f"Saving image {number}/{len(images)} to system ...")
            meta = parameters_text(job.params, plan, generated.seed, generated.image_index)
            data = encode_image(
                generated.image, fmt, parameters=meta[0] if meta else None, scheme=meta[1] if meta else "fooocus"
            )
            result.append(save_output(data, self.data_dir / "outputs", fmt, now=datetime.now()))
        return result

    # -- called by the hooks on this thread -----------------------------------------------------
    def _poll(self, task_id: str, image_index: int) -> Control | None:
        with self._cond:
            current = self._current
            if current is None or current.task_id != task_id:
                return None
            current.image_index = image_index
            if current.stop:
                return "stop"
            if current.skip:
                current.skip = False  # a skip abandons one image only
                current.skipped.append(image_index)
                skipped = True
            else:
                skipped = False
        if skipped:
            self._emit(TaskSkipped(task_id=task_id, at_ms=now_ms(), image_index=image_index))
            return "skip"
        return None


class _Hooks:
    """The engine's view of the runner for one task: progress out, control in."""

    def __init__(self, runner: Runner, task_id: str, image_count: int) -> None:
        self.runner = runner
        self.task_id = task_id
        self.image_count = image_count
        self.image_index = 0

    def on_step(self, image_index: int, step: int, steps: int, preview_jpeg: bytes | None) -> None:
        self.image_index = image_index
        # FooocusAPI's scale: 13% when sampling starts, 100% when the last step of the last image is done.
        done = image_index * steps + step - 1
        percent = int(13 + 87 * done / (self.image_count * steps))
        preview = None
        if preview_jpeg is not None:
            preview = "data:image/jpeg;base64," + base64.b64encode(preview_jpeg).decode()
        message = f"Sampling step {step}/{steps}, image {image_index + 1}/{self.image_count} ..."
        self.runner._progress(self.task_id, percent, message, step=step, preview=preview)

    def poll_control(self) -> Control | None:
        return self.runner._poll(self.task_id, self.image_index)
