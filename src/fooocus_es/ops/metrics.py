"""Prometheus metrics: request metrics from Litestar's plugin, task metrics from the event bus.

`TaskMetrics.apply` is a bus listener: called on the event loop, in log order, for every event
(previews included), so it only does dictionary work and metric updates.

Two registries end up on one page (`MetricsController`):
- Litestar's PrometheusMiddleware keeps its request metrics in prometheus_client's process-wide
  REGISTRY (the plugin offers no per-app registry): `fooocus_es_requests_total`,
  `fooocus_es_request_duration_seconds`, ... with `path` grouped by route template. They are per
  process; with several worker processes use prometheus multiprocess mode.
- The task metrics live in a `CollectorRegistry` of their own per app, so two apps in one process
  (tests) never collide.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import anyio.to_thread
from litestar import MediaType, get
from litestar.di import NamedDependency
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.response import Response
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from fooocus_es.events.types import Envelope, Event, TaskFailed, TaskProgress, TaskQueued, TaskStarted, is_terminal
from fooocus_es.tasks.status import TaskStatus, next_status

if TYPE_CHECKING:
    from fooocus_es.fleet.presence import RunnerInfo

PREFIX: Final = "fooocus_es"
_EXPOSITION_TYPE: Final = CONTENT_TYPE_LATEST.replace("; charset=utf-8", "")  # text/plain; version=1.0.0
# Seconds. A step is ~10 ms (demo on a CPU) to ~1 s (SDXL at 1024 on a small GPU); tasks run up to minutes.
STEP_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TASK_BUCKETS: Final = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


def prometheus_config() -> PrometheusConfig:
    """Request metrics; `path` is the route template (group_path) so ids do not explode the labels."""
    return PrometheusConfig(app_name=PREFIX, prefix=PREFIX, group_path=True, exclude=["^/metrics$"])


RUNNER_STATES: Final = ("idle", "busy", "stale")


class TaskMetrics:
    def __init__(
        self, depth: Callable[[], int] | None = None, runner_states: Callable[[], list[RunnerInfo]] | None = None
    ) -> None:
        """`runner_states`: this process's runners, or the fleet's (blocking: read by `render`, in a thread)."""
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.queued = Counter(f"{PREFIX}_tasks_queued", "Tasks accepted into the queue", registry=registry)
        self.ended = Counter(
            f"{PREFIX}_tasks", "Tasks that ended, by terminal status (finished, skip, stop, failed, cancelled)",
            ["status"], registry=registry,
        )  # fmt: skip
        self.errors = Counter(f"{PREFIX}_task_errors", "Failed tasks by error type", ["error_type"], registry=registry)
        self.queue_depth = Gauge(f"{PREFIX}_queue_depth", "Tasks pending in the queue", registry=registry)
        self.running = Gauge(f"{PREFIX}_tasks_running", "Tasks running now", registry=registry)
        self.step_seconds = Histogram(
            f"{PREFIX}_step_duration_seconds", "Time of one sampling step (between consecutive steps of an image)",
            buckets=STEP_BUCKETS, registry=registry,
        )  # fmt: skip
        self.task_seconds = Histogram(
            f"{PREFIX}_task_duration_seconds", "Time from TaskStarted to the task's end, by terminal status",
            ["status"], buckets=TASK_BUCKETS, registry=registry,
        )  # fmt: skip
        self.wait_seconds = Histogram(
            f"{PREFIX}_queue_wait_seconds", "Time from TaskQueued to TaskStarted", buckets=TASK_BUCKETS,
            registry=registry,
        )  # fmt: skip
        self.runners = Gauge(
            f"{PREFIX}_runners", "Runners by state: this process's, or in a fleet every runner that beat lately",
            ["state"], registry=registry,
        )  # fmt: skip
        self._runner_states = runner_states
        self._pending: dict[str, int] = {}  # task id -> queued at (ms)
        self._started: dict[str, int] = {}  # task id -> started at (ms)
        self._status: dict[str, TaskStatus] = {}  # tasks not ended yet (those seen since start)
        self._last_step: dict[str, tuple[int, int, int]] = {}  # task id -> (image, step, at ms)
        if depth is not None:
            # The live projection is the truth for the queue (it also holds tasks re-queued at start-up).
            self.queue_depth.set_function(lambda: float(depth()))
        else:
            self.queue_depth.set_function(lambda: float(len(self._pending)))
        self.running.set_function(lambda: float(len(self._started)))

    def apply(self, envelope: Envelope) -> None:
        event = envelope.event
        task_id = event.task_id
        status = next_status(self._status.get(task_id), event)
        if status is not None:
            self._status[task_id] = status
        match event:
            case TaskQueued():
                self.queued.inc()
                self._pending[task_id] = event.at_ms
            case TaskStarted():
                queued_at = self._pending.pop(task_id, None)
                if queued_at is not None:
                    self.wait_seconds.observe(max(0, event.at_ms - queued_at) / 1000)
                self._started[task_id] = event.at_ms
            case TaskProgress():
                self._step(task_id, event)
            case _ if is_terminal(event):
                self._end(task_id, event, status)

    def _step(self, task_id: str, event: TaskProgress) -> None:
        if event.stage != "sampling":
            return
        step, image = event.step, event.image_index
        last = self._last_step.get(task_id)
        if last is not None and last[0] == image and step == last[1] + 1:
            self.step_seconds.observe(max(0, event.at_ms - last[2]) / 1000)
        self._last_step[task_id] = (image, step, event.at_ms)

    def _end(self, task_id: str, event: Event, status: TaskStatus | None) -> None:
        # A task queued before this process started has no status here; its event still says how it ended.
        self._status.pop(task_id, None)
        if status is None:
            status = next_status("running", event) or "cancelled"
        if isinstance(event, TaskFailed):
            self.errors.labels(event.error_type).inc()
        self.ended.labels(status).inc()
        started = self._started.pop(task_id, None)
        if started is not None:
            self.task_seconds.labels(status).observe(max(0, event.at_ms - started) / 1000)
        self._pending.pop(task_id, None)
        self._last_step.pop(task_id, None)

    def render(self) -> bytes:
        """The page (worker thread: in a fleet the runner states are a NATS read away)."""
        if self._runner_states is not None:
            with contextlib.suppress(ConnectionError):  # the fleet's server is away: the last counts stand
                states = [info.state for info in self._runner_states()]
                for state in RUNNER_STATES:
                    self.runners.labels(state).set(states.count(state))
        return generate_latest(self.registry)


class MetricsController(PrometheusController):
    """GET /metrics: the plugin's request metrics (process registry) and this app's task metrics."""

    path = "/metrics"

    # Documented as text/plain (it was application/json). Litestar appends "; charset=utf-8" to any
    # text/* type, so the type given here has none: prometheus_client's CONTENT_TYPE_LATEST has one.
    @get(summary="Prometheus metrics (text exposition format)", media_type=MediaType.TEXT)  # tagged "ops" by its router
    async def get(self, metrics: NamedDependency[TaskMetrics]) -> Response[Any]:  # type: ignore[override]
        body = generate_latest(REGISTRY) + await anyio.to_thread.run_sync(metrics.render)
        return Response(body, status_code=200, media_type=_EXPOSITION_TYPE)
