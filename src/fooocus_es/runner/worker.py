"""The runner: one thread per device that claims Generate commands, runs the engine, emits events.

Work arrives through a CommandQueue; Stop and Skip arrive as commands for the task it runs. Every
event it writes names the task version it follows, so a task cancelled before it started is never
started, and nothing is written for a task after its end. Everything blocking (torch, image
encoding, file writes, SQLite appends) happens on this thread; appends never wait for the loop.

Storage faults are values too: an append or a file write that fails for a storage reason (disk full,
database locked, read-only folder) is retried a few times; if it still fails, the task's files are
deleted and the runner waits until the log takes the task's TaskFailed, so no task is left
"running" without a runner, and the runner thread itself never ends on an error.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal, Protocol, TypeVar

import structlog

from fooocus_es.engine.planning.plan import build_plan
from fooocus_es.engine.planning.plan_types import GenerationPlan
from fooocus_es.engine.planning.styles import StyleBook
from fooocus_es.engine.planning.tool_types import ToolCall, tool_call_of
from fooocus_es.events.log import AppendRefused
from fooocus_es.events.store import EventStore
from fooocus_es.events.types import (
    Event,
    ProgressStage,
    TaskFailed,
    TaskFinished,
    TaskProgress,
    TaskSkipped,
    TaskStarted,
    TaskStopped,
    event_type,
    now_ms,
)
from fooocus_es.media.blobs import BlobStore, LocalBlobs
from fooocus_es.media.inputs import stored_input_keys
from fooocus_es.media.metadata import parameters_text
from fooocus_es.media.outputs import encode_image, save_output
from fooocus_es.ops.storage import FaultKind, Place, StorageHealth, classify
from fooocus_es.runner.queue import Claim, CommandQueue
from fooocus_es.tasks.commands import Control, Generate, Skip, Stop

T = TypeVar("T")

# What the engine's hooks answer when polled.
ControlAnswer = Literal["stop", "skip"]


def expected_failures() -> tuple[type[Exception], ...]:
    """Failures a user can act on from the message alone (missing file, unsupported combination).

    Imported on the runner thread when a task fails: importing this module must not load torch
    (an API-only process imports it for the types).
    """
    from fooocus_es.engine.diffusion.pipeline import GenerationFailed
    from fooocus_es.engine.models.store import ModelMissing, ModelUnsupported
    from fooocus_es.engine.models.upscalers import UpscalerMissing, UpscalerUnsupported
    from fooocus_es.engine.tools.errors import ToolUnavailable

    return (
        ModelMissing, ModelUnsupported, UpscalerMissing, UpscalerUnsupported, GenerationFailed, ToolUnavailable,
        ValueError,
    )  # fmt: skip


class TaskAbandoned(Exception):
    """The log refused the runner's event: the task ended elsewhere (cancelled, recovered)."""


class StorageFailed(Exception):
    """The log or the data dir could not be written after retries (or the runner is shutting down)."""

    def __init__(self, place: Place, cause: BaseException) -> None:
        super().__init__(f"{place}: {cause}")
        self.place = place
        self.cause = cause


# Quick retries before a task is given up on (a lock held for a moment, a transient I/O error);
# each try of a locked database already waits the busy timeout.
QUICK_TRIES = 3
MAX_PAUSE_S = 2.0


def _patient(kind: FaultKind | None, until_stored: bool = False) -> bool:
    """Whether a write keeps being retried past QUICK_TRIES (until it works or the runner stops).

    An unreachable fleet store (nats-server restarting) heals by itself and the task cannot go on
    without it, so the runner waits it out; if another runner took the task over meanwhile (the
    queue's ack wait ran out), the version check turns the runner's next append into a refusal.
    """
    return until_stored or kind == "unreachable"


class EngineLike(Protocol):
    """What the runner needs from engine.pipeline.Engine (kept narrow so runners can be remote later)."""

    store: Any

    def prepare(self, plan: GenerationPlan) -> None: ...
    def generate(self, plan: GenerationPlan, hooks: Any) -> tuple[list[Any], str]: ...


# Downloads the missing model files of a plan (or a tool call) it knows URLs for; reports progress as text lines.
ModelFetcher = Callable[[GenerationPlan | ToolCall, Callable[[str], None]], None]


@dataclass(frozen=True)
class _Held:
    """A task claimed by a running batch that it cannot join: run next, in claim order."""

    claim: Claim
    plan: GenerationPlan | None  # None: planning failed (it fails when it runs)
    key: object  # its batch key (None: it never batches)


@dataclass
class _Current:
    task_id: str
    version: int  # the task's version in the log, as this runner last wrote it
    stop: bool = False
    skip: bool = False
    image_index: int = 0
    skipped: list[int] = field(default_factory=list)
    written: list[str] = field(default_factory=list)  # output keys saved for the task so far
    fence_checked: float = 0.0  # monotonic time of the last "is the task still mine" check


FENCE_CHECK_S: Final = 5.0
# Finished tasks waiting for the saver at most: past it the device waits (their images are in memory).
SAVES_QUEUED: Final = 2


@dataclass
class _Finish:
    """What is left of a task once its images are generated: saving them and its terminal event."""

    current: _Current
    params: dict[str, Any]
    plan: GenerationPlan
    images: list[Any]
    status: str
    interrupted: bool  # the runner was shutting down when the task stopped
    task_log: Any
    started: float  # perf_counter at the task's start


CLAIM_SLICE_S: Final = 1.0  # a claim waits this long at a time, so a shutdown is seen within it
ADMIT_EVERY_S: Final = 0.25  # how often a running batch looks in the queue for tasks to join it
ADMIT_WAIT_S: Final = 0.05  # how long one look waits for a command
# A running batch looks past tasks of other batch keys (held, to run next in queue order) for ones
# that join it: at most this many held, and at most this many tasks joining past a held one, so
# mixed shapes group into batches while no task waits behind more than a batch of later ones.
MAX_HELD: Final = 8
MAX_OVERTAKE: Final = 8


@dataclass
class _Member:
    """A task of a running batch: what its end needs (the batch answers its claim)."""

    command: Generate
    claim: Claim
    current: _Current
    task_log: Any
    started: float  # perf_counter at the task's start
    plan: GenerationPlan


def _key_of(engine: EngineLike, plan: GenerationPlan) -> object | None:
    """The plan's batch key when the engine runs it in a batch other tasks can join, else None."""
    key_of = getattr(engine, "batch_key_of", None)  # engine.pipeline.Engine; test engines have none
    return key_of(plan) if key_of is not None else None


class TaskHandedOver(Exception):
    """The runner stops (SIGTERM) in a fleet: its task goes back to the queue, for another runner."""


class Runner:
    def __init__(
        self,
        store: EventStore,
        queue: CommandQueue,
        engine_factory: Callable[[], EngineLike],
        data_dir: Path,
        device: str,
        warm_model: str | None = None,
        style_book: StyleBook | None = None,
        fetch_models: ModelFetcher | None = None,
        blobs: BlobStore | None = None,
        runner_id: str | None = None,
        retry_interrupted: int = 1,
        storage: StorageHealth | None = None,
        hand_over: bool = False,
        preview_interval_s: float = 0.1,
        max_held: int = MAX_HELD,
    ) -> None:
        """`hand_over`: on shutdown, give the running task back to the queue instead of failing it
        "interrupted" (a fleet: another runner re-runs it at once, seeded, so the same pixels)."""
        self.hand_over = hand_over
        # Previews are made at most this often per task (1 / the stream rate): a faster one is never shown.
        self.preview_interval_s = preview_interval_s
        self.store = store
        self.blobs = blobs or LocalBlobs(data_dir)
        self.queue = queue
        self.engine_factory = engine_factory
        self.data_dir = data_dir
        self.device = device
        self.runner_id = runner_id or f"runner-{device}"
        self.retry_interrupted = retry_interrupted
        self.warm_model = warm_model
        self.style_book = style_book or StyleBook(data_dir)
        self.fetch_models = fetch_models
        self.storage = storage
        self._wake = threading.Event()  # set on shutdown: ends a wait for storage at once
        self._engine: EngineLike | None = None
        self._lock = threading.Lock()
        self._current: _Current | None = None
        self._joined: dict[str, _Current] = {}  # tasks that joined the running batch (--max-batch)
        # Claimed while batching but not compatible (with their batch key): they run next, in order.
        # `max_held` 1 where other runners share the queue: tasks held here would wait while they idle.
        self._held: list[_Held] = []
        self.max_held = max(1, max_held)
        self._shutdown = False
        self._thread = threading.Thread(target=self._loop, name=self.runner_id, daemon=True)
        # One saver thread: PNG encoding (~120 ms for 1024x1024) and writes leave the device's thread.
        self._saver = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.runner_id}-save")
        self._saves = threading.BoundedSemaphore(SAVES_QUEUED)

    # -- commands (any thread) ------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def deliver(self, command: Control) -> bool:
        """Stop or skip the task this runner runs; False when it runs another one (or none)."""
        with self._lock:
            current = self._on_device(command.task_id)
            if current is None:
                return False
            match command:
                case Stop():
                    current.stop = True
                case Skip():
                    current.skip = True
            return True

    @property
    def running_task(self) -> str | None:
        with self._lock:
            return self._current.task_id if self._current is not None else None

    @property
    def running_tasks(self) -> list[str]:
        """Every task on the device: one, or a batch's (--max-batch)."""
        with self._lock:
            primary = [self._current.task_id] if self._current is not None else []
            return primary + [task_id for task_id in self._joined if task_id not in primary]

    def _on_device(self, task_id: str) -> _Current | None:
        """The state of a task on the device (hold the lock)."""
        if self._current is not None and self._current.task_id == task_id:
            return self._current
        return self._joined.get(task_id)

    def stop_soon(self) -> None:
        """Stop the running task and claim nothing more (its thread ends within a claim slice)."""
        with self._lock:
            self._shutdown = True
            for current in (self._current, *self._joined.values()):
                if current is not None:
                    current.stop = True
        self._wake.set()
        self.queue.wake()  # a claim waiting for work returns now, not at the end of its slice

    def join(self, timeout: float = 30.0) -> None:
        """Until the thread ended and every task it handed to the saver is stored."""
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._saver.shutdown(wait=True)

    def shutdown(self, timeout: float = 30.0) -> None:
        """stop_soon, join, then close the queue (runners sharing one queue: stop_soon and join each
        first, then close it once, so none is left unable to hand its task back)."""
        self.stop_soon()
        self.join(timeout)
        self.queue.close()

    @property
    def busy(self) -> bool:
        return self._current is not None

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- the worker thread ----------------------------------------------------------------------
    def _loop(self) -> None:
        self._warm_up()
        while not self._shutting_down():
            # In slices, so a shutdown is seen without closing the queue under other runners.
            claim = self._held.pop(0).claim if self._held else None
            if claim is None:
                claim = self.queue.claim(self.runner_id, timeout=CLAIM_SLICE_S)
            if claim is None:
                continue
            if self._shutting_down():
                claim.release()
                break
            current = _Current(claim.command.task_id, version=claim.command.version)
            outcome: bool | _Finish | Literal["answered"] = True
            try:
                outcome = self._start(claim.command, claim.attempt, current, claim)
            except Exception as exc:  # a bug must not end the thread: the next task still runs
                log = structlog.get_logger("fooocus_es.runner")
                log.exception("runner.task_crashed", task_id=claim.command.task_id)
                self._fail_crashed(current, exc)
            if outcome == "answered":
                continue
            if isinstance(outcome, _Finish):
                self._save_beside(outcome, claim)
            elif outcome:
                claim.ack()  # the task's terminal event is stored (or it was never started)
            else:
                claim.release()  # handed back: another runner takes the task over now
        for held in self._held:  # claimed, never started: back to the queue for whoever runs next
            held.claim.release()
        self._held.clear()

    def _save_beside(self, job: _Finish, claim: Claim) -> None:
        """Encoding and saving on the saver thread: the next task starts on the device now."""
        self._saves.acquire()
        self._saver.submit(self._finish_then_answer, job, claim)

    def _finish_then_answer(self, job: _Finish, claim: Claim) -> None:
        """The saver thread: the images saved and the terminal event stored, then the claim answered."""
        done = True
        try:
            done = self._finish(job)
        except Exception as exc:  # a bug: the task still ends, the saver goes on
            structlog.get_logger("fooocus_es.runner").exception("runner.save_crashed", task_id=job.current.task_id)
            self._fail_crashed(job.current, exc)
        finally:
            self._saves.release()
            claim.ack() if done else claim.release()

    def _fail_crashed(self, current: _Current, exc: Exception) -> None:
        """End a task whose run raised (a bug) as failed, so it is not left "running" once acked."""
        task_id = current.task_id
        try:
            message = f"runner error: {type(exc).__name__}: {exc}"
            event = TaskFailed(task_id=task_id, at_ms=now_ms(), error_type="RunnerError", message=message)
            self._emit(event, current=current)
        except Exception as final:  # ended elsewhere, or the log is away too: recovery has the rest
            structlog.get_logger("fooocus_es.runner").warning("runner.crash_not_stored", task_id=task_id,
                                                              error=str(final))  # fmt: skip
        finally:
            with self._lock:  # the saver calls this too: never clear the task now on the device
                if self._current is current:
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

    def _emit(self, event: Event, *, until_stored: bool = False, current: _Current | None = None) -> None:
        """Append after the version this runner last wrote; a refusal abandons the task.

        A storage error is retried (QUICK_TRIES times, or until it works with `until_stored`), which
        is safe because the append names the version it follows: a StaleVersion after a failed try
        is that try's own event having landed, when the log holds it at the next version. `current`:
        the task's state (default: the task on the device; the saver passes the one it finishes).
        """
        current = current or self._current
        if current is None or current.task_id != event.task_id:
            raise TaskAbandoned(event.task_id)
        tries = 0
        while True:
            try:
                self.store.emit(event, expected_version=current.version)
                break
            except AppendRefused as exc:
                if tries and self._landed(event, current.version + 1):
                    break
                raise TaskAbandoned(str(exc)) from exc
            except Exception as exc:
                if (kind := classify(exc)) is None:
                    raise
                tries += 1
                self._report("log", exc)
                if (tries >= QUICK_TRIES and not _patient(kind, until_stored)) or not self._pause(tries):
                    raise StorageFailed("log", exc) from exc
        if self.storage is not None:
            self.storage.worked("log")
        current.version += 1

    def _landed(self, event: Event, version: int) -> bool:
        """Whether the log holds `event` as the task's event number `version` (a retried append)."""
        try:  # the append's answer was lost to an unreachable store: wait for it to tell
            stored = self._retried("log", lambda: list(self.store.log.read(task_id=event.task_id)))
        except Exception:
            return False
        if len(stored) < version:
            return False
        found = stored[version - 1].event
        return event_type(found) == event_type(event) and found.at_ms == event.at_ms

    def _report(self, place: Place, exc: BaseException) -> None:
        structlog.get_logger("fooocus_es.runner").warning("runner.storage_error", place=place, error=str(exc))
        if self.storage is not None:
            self.storage.report(place, exc)

    def _pause(self, tries: int) -> bool:
        """Back off before the next try; False when the runner is shutting down (stop retrying)."""
        return not self._wake.wait(min(0.2 * 2 ** (tries - 1), MAX_PAUSE_S)) and not self._shutting_down()

    def run(self, command: Generate, *, attempt: int = 1) -> bool:
        """Run one task to its terminal event on this thread (tests; the loop saves on its saver
        thread instead); False when the task was handed back (release its command, not ack it)."""
        outcome = self._start(command, attempt, _Current(command.task_id, version=command.version))
        return self._finish(outcome) if isinstance(outcome, _Finish) else outcome

    def _start(
        self, command: Generate, attempt: int, current: _Current, claim: Claim | None = None
    ) -> bool | _Finish | Literal["answered"]:
        """The device's part of a task: started, generated; what is left to save comes back as a
        `_Finish` (else True: ended, or never started; False: handed back; "answered": it ran in a
        batch with other tasks, each of whose claims is answered already).

        """
        task_id = command.task_id
        task_log = self._task_log(task_id)
        with self._lock:
            self._current = current
        begun = self._begin(command, attempt, current, task_log)
        if begun is not None:
            self._clear()
            return begun
        try:
            return self._run_started(command, task_log, current, claim) or True
        except (TaskHandedOver, TaskAbandoned, StorageFailed) as exc:
            return self._ended_early(exc, task_log, current)
        finally:
            self._clear()

    def _ended_early(
        self, exc: TaskHandedOver | TaskAbandoned | StorageFailed, task_log: Any, current: _Current
    ) -> bool:
        """A started task that cannot go on: its files go, and the claim's answer comes back (False:
        hand it back to the queue, for another runner; True: it ended, or its failure is stored)."""
        if isinstance(exc, TaskAbandoned):
            self._discard_outputs(current)
            task_log.warning("task.abandoned", reason=str(exc))
            return True
        if isinstance(exc, StorageFailed) and not (self.hand_over and self._shutting_down()):
            self._fail_on_storage(current.task_id, exc, task_log, current)
            return True
        self._discard_outputs(current)  # handed over, or its store is away while the runner stops
        reason = "the runner stops" if isinstance(exc, TaskHandedOver) else f"storage failed while stopping ({exc})"
        task_log.info("task.handed_over", reason=f"{reason}: another runner takes the task over")
        return False

    def _task_log(self, task_id: str) -> Any:
        # Bound per task, not at construction: structlog is configured by the app after the runner exists.
        return structlog.get_logger("fooocus_es.runner").bind(device=self.device, task_id=task_id)

    def _begin(self, command: Generate, attempt: int, current: _Current, task_log: Any) -> bool | None:
        """TaskStarted for the task; None once it is stored, else the claim's answer (True: it ended
        or never starts, False: hand it back).

        `attempt` > 1 is a command handed out again because its runner went away (a fleet's queue
        redelivers after the ack wait): a task that had started is re-run (seeded, so the same
        pixels) at most `retry_interrupted` times, then failed "interrupted", so a task that kills
        runners ends instead of looping. The version check fences the runner that went away.
        """
        task_id = command.task_id
        runs = 0  # how many runners started the task before (the log counts, not the deliveries)
        if attempt > 1:
            try:
                stored = self._retried("log", lambda: [e.event for e in self.store.log.read(task_id=task_id)])
            except StorageFailed:  # the log failed, or the runner shuts down: a fleet hands it on
                task_log.warning("task.not_started", reason="the log could not be read")
                return not self.hand_over
            # A delivery can be lost without a run (to a pull request that just expired), so the
            # queue's delivery count overstates how often the task was interrupted.
            runs = sum(isinstance(event, TaskStarted) for event in stored)
            current.version = max(current.version, len(stored))
        try:
            if runs > self.retry_interrupted:
                message = f"interrupted: the task's runner went away {runs} times"
                failed = TaskFailed(task_id=task_id, at_ms=now_ms(), error_type="Interrupted", message=message)
                self._emit(failed, current=current)
                task_log.warning("task.failed", error_type="Interrupted", error=message)
                return True
            # Nothing of the task has happened yet: waiting for storage to start it is safe.
            started = TaskStarted(
                task_id=task_id, at_ms=now_ms(), device=self.device, attempt=runs + 1, runner=self.runner_id
            )
            self._emit(started, until_stored=True, current=current)
        except TaskAbandoned:
            task_log.info("task.not_started", reason="cancelled or ended before it started")
            return True
        except StorageFailed:  # shutting down: still queued in the log; a restart (or a fleet's next runner) runs it
            task_log.warning("task.not_started", reason="storage failed while the server shut down")
            return not self.hand_over
        task_log.info("task.started")
        return None

    def _fail_on_storage(self, task_id: str, exc: StorageFailed, task_log: Any, current: _Current) -> None:
        """Delete the task's files and, once the log takes it, store the task as failed."""
        self._discard_outputs(current)
        what = "the task log" if exc.place == "log" else f"{exc.place}/"
        message = f"storage error: {what} could not be written ({exc.cause}); the task was not completed"
        task_log.error("task.failed", error_type="StorageError", error=message)
        try:
            self._emit(
                TaskFailed(task_id=task_id, at_ms=now_ms(), error_type="StorageError", message=message),
                until_stored=True, current=current,
            )  # fmt: skip
        except (TaskAbandoned, StorageFailed) as final:  # ended elsewhere, or shut down: a restart recovers it
            task_log.warning("task.failed_not_stored", reason=str(final))

    def _discard_outputs(self, current: _Current | None = None) -> None:
        """Remove the files saved for the task (default: the one on the device): no record names them."""
        current = current or self._current
        if current is None:
            return
        for key in current.written:
            try:
                self.blobs.delete(key)
            except OSError as exc:
                log = structlog.get_logger("fooocus_es.runner")
                log.warning("runner.orphan_not_removed", key=key, error=str(exc))
        current.written.clear()

    def _clear(self) -> None:
        with self._lock:
            self._current = None

    def _run_started(
        self, command: Generate, task_log: Any, current: _Current, claim: Claim | None = None
    ) -> _Finish | None | Literal["answered"]:
        """Plan, load, generate; None when the task failed (its TaskFailed is stored), "answered" when
        it ran in a batch with the compatible tasks queued behind it (`claim` given, --max-batch > 1)."""
        task_id, params = command.task_id, command.params
        started = time.perf_counter()
        try:
            call = tool_call_of(params)
            if call is not None:
                self._run_tool(task_id, call, task_log, current, started)
                return None
            plan = self._plan_for(command, task_log)
            if self.fetch_models is not None:  # files a preset or performance mode knows a URL for
                self.fetch_models(plan, lambda message: self._progress(task_id, 1, message, stage="downloading"))
            self._progress(task_id, 2, "Loading models ...", stage="loading")
            engine = self._get_engine()
            engine.prepare(plan)
            count = len(plan.seeds)
            self._progress(task_id, 13, f"Preparing task 1/{count} ...", stage="preparing", image_count=count)
            hooks = _Hooks(self, task_id, count, current)
            if claim is not None and _key_of(engine, plan) is not None:
                self._run_batch(_Member(command, claim, current, task_log, started, plan), hooks, engine)
                return "answered"
            images, status = engine.generate(plan, hooks)
            if status == "stopped" and self.hand_over and self._shutting_down():
                raise TaskHandedOver(task_id)  # nothing saved: the next runner makes every image
        except (TaskAbandoned, StorageFailed, TaskHandedOver):
            raise
        except Exception as exc:  # a task's failure is a value: it never takes the runner down
            self._task_failed(exc, task_log, current)
            return None
        interrupted = self._shutting_down() and status == "stopped"  # decided now, not when saved
        return _Finish(current, params, plan, images, status, interrupted, task_log, started)

    def _run_tool(self, task_id: str, call: ToolCall, task_log: Any, current: _Current, started: float) -> None:
        """A tool call (describe-image, generate_mask) to its TaskFinished: small and quick, so its
        one output (a mask) is written here rather than on the saver thread."""
        self._retried("inputs", lambda: self.blobs.local_path(call.image))  # a fleet: stored on another machine
        if self.fetch_models is not None and not call.demo:  # the catalogue's files, fetched on first use
            self.fetch_models(call, lambda message: self._progress(task_id, 1, message, stage="downloading"))
        self._progress(task_id, 2, "Loading models ...", stage="loading")
        run_tool = getattr(self._get_engine(), "run_tool", None)
        if run_tool is None:
            from fooocus_es.engine.tools.errors import ToolUnavailable

            raise ToolUnavailable("this runner's engine runs no tools")
        answer = run_tool(call)
        result = []
        if answer.image is not None:
            self._progress(task_id, 100, "Saving image 1/1 to system ...", stage="saving", image_count=1)
            result.append(self._save_file(encode_image(answer.image, "png"), "png", current))
        self._emit(TaskFinished(task_id=task_id, at_ms=now_ms(), result=result, text=answer.text), current=current)
        task_log.info("task.ended", status="finished", tool=call.__struct_config__.tag,
                      seconds=round(time.perf_counter() - started, 3))  # fmt: skip

    # -- a batch of tasks on the device (--max-batch > 1) ------------------------------------------
    def _run_batch(self, first: _Member, hooks: _Hooks, engine: Any) -> None:
        """The task and the compatible tasks queued behind it, denoised together (continuous
        batching: a task arriving while the batch runs joins it at the next step). Each task ends
        on its own, its images saved beside the batch, and its claim is answered then."""
        members = {first.current.task_id: first}
        looked = [0.0]
        overtakes = [0]  # tasks that joined from the queue past a held one
        first.task_log.info("task.batch_opened", key=str(_key_of(engine, first.plan)))

        def admit(key: object, free: int) -> list[tuple[GenerationPlan, _Hooks]]:
            if self._shutting_down() or time.monotonic() - looked[0] < ADMIT_EVERY_S:
                return []
            looked[0] = time.monotonic()
            joining: list[tuple[GenerationPlan, _Hooks]] = []

            def join(claim: Claim, plan: GenerationPlan) -> None:
                nonlocal free
                joined = self._join(claim, plan, engine)
                if joined is not None:
                    member, task_hooks = joined
                    members[member.current.task_id] = member
                    joining.append((member.plan, task_hooks))
                    free -= len(member.plan.seeds)

            # Held tasks of this batch's key first: they were queued before anything still queued.
            for held in [held for held in self._held if held.key == key and held.plan is not None]:
                if free <= 0:
                    return joining
                self._held.remove(held)
                join(held.claim, held.plan)  # type: ignore[arg-type]
            while free > 0 and len(self._held) < self.max_held and not (self._held and overtakes[0] >= MAX_OVERTAKE):
                claim = self.queue.claim(self.runner_id, timeout=ADMIT_WAIT_S)
                if claim is None:
                    break
                plan = self._plan_or_none(claim)
                plan_key = _key_of(engine, plan) if plan is not None else None
                if plan is None or plan_key != key:
                    self._held.append(_Held(claim, plan, plan_key))  # it runs after this batch
                    continue
                overtakes[0] += 1 if self._held else 0
                join(claim, plan)
            return joining

        def on_done(plan: GenerationPlan, images: list[Any], status: str, error: Exception | None) -> None:
            self._batch_member_ended(members.pop(plan.task_id), images, status, error)

        try:
            engine.generate_batch(first.plan, hooks, admit=admit, on_done=on_done)
        except Exception as exc:  # the batch itself failed (the UNet raised): every task still in it fails
            for member in list(members.values()):
                self._batch_member_ended(member, [], "finished", exc)
            members.clear()

    def _plan_or_none(self, claim: Claim) -> GenerationPlan | None:
        """A claimed task's plan, or None when planning fails (it fails on its own path, with its
        own message, when it runs)."""
        try:
            return self._plan_for(claim.command, self._task_log(claim.command.task_id))
        except Exception:
            return None

    def _join(self, claim: Claim, plan: GenerationPlan, engine: Any) -> tuple[_Member, _Hooks] | None:
        """Start a claimed task of the running batch's key inside it; None when it ended instead
        (cancelled meanwhile, or it failed: its claim is answered then)."""
        command = claim.command
        task_log = self._task_log(command.task_id)
        current = _Current(command.task_id, version=command.version)
        with self._lock:
            self._joined[command.task_id] = current
        begun = self._begin(command, claim.attempt, current, task_log)
        if begun is not None:
            with self._lock:
                self._joined.pop(command.task_id, None)
            claim.ack() if begun else claim.release()
            return None
        member = _Member(command, claim, current, task_log, time.perf_counter(), plan)
        task_log.info("task.joined_batch")
        try:
            self._progress(command.task_id, 2, "Loading models ...", stage="loading", current=current)
            engine.prepare(plan)  # the batch's models, already set up: it checks the plan
            count = len(plan.seeds)
            self._progress(command.task_id, 13, f"Preparing task 1/{count} ...", stage="preparing",
                           image_count=count, current=current)  # fmt: skip
        except Exception as exc:
            self._batch_member_ended(member, [], "finished", exc)
            return None
        return member, _Hooks(self, command.task_id, count, current)

    def _batch_member_ended(self, member: _Member, images: list[Any], status: str, error: Exception | None) -> None:
        """A task of the batch is done (or failed): save it beside the batch, or answer its claim now."""
        current, task_log = member.current, member.task_log
        with self._lock:
            self._joined.pop(current.task_id, None)
            if self._current is current:
                self._current = None
        answer = True
        try:
            if error is not None:
                raise error
            if status == "stopped" and self.hand_over and self._shutting_down():
                raise TaskHandedOver(current.task_id)
            interrupted = self._shutting_down() and status == "stopped"
            job = _Finish(current, member.command.params, member.plan, images, status, interrupted, task_log,
                          member.started)  # fmt: skip
            self._save_beside(job, member.claim)
            return
        except (TaskHandedOver, TaskAbandoned, StorageFailed) as exc:
            answer = self._ended_early(exc, task_log, current)
        except Exception as exc:
            try:
                self._task_failed(exc, task_log, current)
            except (TaskAbandoned, StorageFailed) as final:  # ended elsewhere, or the log is away
                task_log.warning("task.failed_not_stored", reason=str(final))
        member.claim.ack() if answer else member.claim.release()

    def _plan_for(self, command: Generate, task_log: Any) -> GenerationPlan:
        """The task's plan, its stored inputs fetched first (a fleet: another machine stored them)."""
        for key in stored_input_keys(command.params):
            self._retried("inputs", lambda key=key: self.blobs.local_path(key))
        plan = build_plan(command.task_id, command.params, data_dir=self.data_dir, styles=self.style_book.styles())
        if plan.notes:
            task_log.warning("task.notes", notes=list(plan.notes))
        return plan

    def _task_failed(self, exc: Exception, task_log: Any, current: _Current) -> None:
        self._discard_outputs(current)
        message = str(exc) or type(exc).__name__
        if isinstance(exc, expected_failures()):  # the message says it all; no traceback
            task_log.warning("task.failed", error_type=type(exc).__name__, error=message)
        else:
            task_log.exception("task.failed", error=message)
        event = TaskFailed(task_id=current.task_id, at_ms=now_ms(), error_type=type(exc).__name__, message=message)
        self._emit(event, current=current)

    def _finish(self, job: _Finish) -> bool:
        """Encode and save the images, then store the terminal event (the saver thread, or inline in
        `run`); False when the task is handed back instead (its command to be released)."""
        current, task_log = job.current, job.task_log
        task_id = current.task_id
        try:
            try:
                result = self._save(job.params, job.plan, job.images, current)
            except (TaskAbandoned, StorageFailed):
                raise
            except Exception as exc:  # an image that cannot be encoded: the task fails, the runner goes on
                self._task_failed(exc, task_log, current)
                return True
            if job.interrupted:
                event: Event = TaskFailed(
                    task_id=task_id, at_ms=now_ms(), error_type="Interrupted",
                    message="the server shut down while the task was running", result=result,
                )  # fmt: skip
            elif job.status == "stopped":
                event = TaskStopped(task_id=task_id, at_ms=now_ms(), result=result)
            else:
                event = TaskFinished(task_id=task_id, at_ms=now_ms(), result=result, notes=list(job.plan.notes))
            self._emit(event, current=current)
        except (TaskAbandoned, StorageFailed) as exc:
            return self._ended_early(exc, task_log, current)
        elapsed = round(time.perf_counter() - job.started, 3)
        task_log.info("task.ended", status=job.status, images=len(result), seconds=elapsed)
        return True

    def _shutting_down(self) -> bool:
        with self._lock:
            return self._shutdown

    def _get_engine(self) -> EngineLike:
        if self._engine is None:
            self._engine = self.engine_factory()
        return self._engine

    def _progress(
        self,
        task_id: str,
        percent: int,
        message: str,
        *,
        stage: ProgressStage,
        step: int = 0,
        steps: int = 0,
        image_index: int = 0,
        image_count: int = 0,
        preview: str | None = None,
        current: _Current | None = None,
    ) -> None:
        event = TaskProgress(
            task_id=task_id, at_ms=now_ms(), percent=percent, message=message, stage=stage, step=step,
            steps=steps, image_index=image_index, image_count=image_count, preview=preview,
        )  # fmt: skip
        current = current or self._current
        if current is None or current.task_id != task_id:
            raise TaskAbandoned(task_id)
        if not self.store.announces:
            self._emit(event, current=current)  # one machine: progress is in the log, like every other event
            return
        # A fleet: progress goes to the followers live, never into the stream, so no version moves;
        # every few seconds the runner checks that the task is still its own (a takeover fences it).
        # Both are best-effort: with the server away, progress is dropped and the check waits.
        try:
            self.store.announce(event)
            now = time.monotonic()
            if now - current.fence_checked > FENCE_CHECK_S:
                if self.store.log.version(task_id) != current.version:
                    raise TaskAbandoned(f"task {task_id}: another runner took it over")
                current.fence_checked = now
        except OSError as exc:
            if classify(exc) != "unreachable":
                raise

    def _save(self, params: dict[str, Any], plan: GenerationPlan, images: list[Any], current: _Current) -> list[str]:
        fmt = params["output_format"]
        result: list[str] = []
        for number, generated in enumerate(images, start=1):
            self._progress(
                current.task_id, 100, f"Saving image {number}/{len(images)} to system ...", stage="saving",
                image_index=number - 1, image_count=len(images), current=current,
            )  # fmt: skip
            expansion = getattr(generated, "prompt_expansion", "")  # Fooocus V2's text, made on the runner
            meta = parameters_text(params, plan, generated.seed, generated.image_index, expansion)
            data = encode_image(
                generated.image, fmt, parameters=meta[0] if meta else None, scheme=meta[1] if meta else "fooocus"
            )
            result.append(self._save_file(data, fmt, current))
        return result

    def _save_file(self, data: bytes, fmt: str, current: _Current) -> str:
        """Write one output (retried on a storage error: a failed create leaves no file, names are fresh)."""
        key = self._retried("outputs", lambda: save_output(data, self.blobs, fmt, now=datetime.now()))
        current.written.append(key)
        return key

    def _retried(self, place: Place, attempt: Callable[[], T]) -> T:
        """`attempt()`, retried on a storage error (QUICK_TRIES, or while the store is unreachable)."""
        tries = 0
        while True:
            try:
                result = attempt()
                break
            except OSError as exc:
                tries += 1
                self._report(place, exc)
                if (tries >= QUICK_TRIES and not _patient(classify(exc))) or not self._pause(tries):
                    raise StorageFailed(place, exc) from exc
        if self.storage is not None:
            self.storage.worked(place)
        return result

    # -- called by the hooks on this thread -----------------------------------------------------
    def _poll(self, task_id: str, image_index: int) -> ControlAnswer | None:
        with self._lock:
            current = self._on_device(task_id)
            if current is None:
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
            self._emit(TaskSkipped(task_id=task_id, at_ms=now_ms(), image_index=image_index), current=current)
            return "skip"
        return None


class _Hooks:
    """The engine's view of the runner for one task: progress out, control in."""

    def __init__(self, runner: Runner, task_id: str, image_count: int, current: _Current | None = None) -> None:
        self.runner = runner
        self.current = current  # the task's state (a batch runs several tasks' hooks at once)
        self.task_id = task_id
        self.image_count = image_count
        self.image_index = 0
        self.steps = 1
        # Steps done per image: batched images (--max-batch) step side by side, not one after another.
        self._done: dict[int, int] = {}
        self._preview_at = -float("inf")  # monotonic time of the task's last preview

    def wants_preview(self, image_index: int) -> bool:
        """At most one preview per preview interval for the whole task (its images share the stream)."""
        now = time.monotonic()
        if now - self._preview_at < self.runner.preview_interval_s:
            return False
        self._preview_at = now
        return True

    def on_step(self, image_index: int, step: int, steps: int, preview_jpeg: bytes | None) -> None:
        self.image_index, self.steps = image_index, steps
        self._done[image_index] = step
        # FooocusAPI's scale: 13% when sampling starts, 100% when the last step of the last image is
        # done; one image after another this is image_index * steps + step - 1 steps done.
        done = sum(self._done.values()) - 1
        percent = int(13 + 87 * done / (self.image_count * steps))
        preview = None
        if preview_jpeg is not None:
            preview = "data:image/jpeg;base64," + base64.b64encode(preview_jpeg).decode()
        message = f"Sampling step {step}/{steps}, image {image_index + 1}/{self.image_count} ..."
        self.runner._progress(
            self.task_id, percent, message, stage="sampling", step=step, steps=steps, image_index=image_index,
            image_count=self.image_count, preview=preview, current=self.current,
        )  # fmt: skip

    def poll_control(self) -> ControlAnswer | None:
        answer = self.runner._poll(self.task_id, self.image_index)
        if answer == "skip":  # a skipped image counts as done, as Fooocus's percent jumps past it
            self._done[self.image_index] = self.steps
        return answer
