"""The live projection: pending tasks in queue order and the running task with progress and preview.

Applied synchronously by the bus on the event loop, in log order, so /tasks current|pending is
always consistent with what has been published. Ended tasks leave it; history is read from
generate_record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fooocus_es.events.types import (
    Envelope,
    TaskProgress,
    TaskQueued,
    TasksDeleted,
    TaskSkipped,
    TaskStarted,
    is_terminal,
)


@dataclass
class LiveTask:
    id: int
    task_id: str
    req_params: dict[str, Any]
    in_queue_mills: int
    webhook_url: str
    start_mills: int | None = None
    task_status: str = "pending"
    progress: int = 0
    message: str = ""
    preview: str | None = None
    skipped: bool = False
    notes: list[str] = field(default_factory=list)
    wire: str = ""

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task_id": self.task_id,
            "req_params": self.req_params,
            "in_queue_mills": self.in_queue_mills,
            "start_mills": self.start_mills,
            "finish_mills": None,
            "task_status": self.task_status,
            "progress": self.progress,
            "webhook_url": self.webhook_url,
            "result": [],
            "preview": self.preview,
            "error": None,
            "notes": self.notes,
            "wire": self.wire,
        }


@dataclass
class LiveTasks:
    pending: dict[str, LiveTask] = field(default_factory=dict)  # insertion order = queue order
    running: dict[str, LiveTask] = field(default_factory=dict)  # one per runner (one today)

    def apply(self, envelope: Envelope) -> None:
        event = envelope.event
        match event:
            case TaskQueued():
                self.pending[event.task_id] = LiveTask(
                    id=envelope.seq,
                    task_id=event.task_id,
                    req_params=event.params,
                    in_queue_mills=event.at_ms,
                    webhook_url=event.webhook_url,
                    notes=list(event.notes),
                    wire=event.wire,
                )
            case TaskStarted():
                task = self.pending.pop(event.task_id, None)
                if task is not None:
                    task.start_mills, task.task_status = event.at_ms, "running"
                    self.running[event.task_id] = task
            case TaskProgress():
                task = self.running.get(event.task_id)
                if task is not None:
                    task.progress, task.message = event.percent, event.message
                    if event.preview is not None:
                        task.preview = event.preview
            case TaskSkipped():
                task = self.running.get(event.task_id)
                if task is not None:
                    task.skipped = True
            case TasksDeleted():
                pass  # only ended tasks are deleted; none of them is live
            case _ if is_terminal(event):
                self.pending.pop(event.task_id, None)
                self.running.pop(event.task_id, None)

    def get(self, task_id: str) -> LiveTask | None:
        return self.running.get(task_id) or self.pending.get(task_id)

    def current_records(self) -> list[dict[str, Any]]:
        return [task.record() for task in self.running.values()]

    def pending_records(self, page: int = 0, page_size: int = 0) -> list[dict[str, Any]]:
        tasks = list(self.pending.values())
        if page_size > 0:
            tasks = tasks[page * page_size : (page + 1) * page_size]
        return [task.record() for task in tasks]

    @property
    def depth(self) -> int:
        return len(self.pending)
