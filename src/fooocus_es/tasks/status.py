"""One TaskStatus and one transition rule, shared by the read model, the live view, metrics and the API.

The values are FooocusAPI's `task_status` strings (`skip` and `stop` included: its clients read them).
A task moves pending -> running -> an end; `skip` marks a running task that abandoned an image and
becomes the end status if the task then finishes. Nothing leaves an end status: the log refuses an
event after a terminal one, and `next_status` answers None for it.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

from fooocus_es.events.types import (
    Event,
    TaskCancelled,
    TaskFailed,
    TaskFinished,
    TaskQueued,
    TaskSkipped,
    TaskStarted,
    TaskStopped,
)

TaskStatus = Literal["pending", "running", "skip", "finished", "stop", "failed", "cancelled"]

ALL_STATUSES: Final[tuple[TaskStatus, ...]] = get_args(TaskStatus)
ACTIVE: Final[frozenset[TaskStatus]] = frozenset({"pending", "running"})
# `skip` is live while the task runs, and an end status once it finished: ended means finish_mills.
ENDED: Final[frozenset[TaskStatus]] = frozenset({"finished", "skip", "stop", "failed", "cancelled"})
SUCCEEDED: Final[frozenset[TaskStatus]] = frozenset({"finished", "skip", "stop"})  # with the images made


def next_status(current: TaskStatus | None, event: Event, *, ended: bool = False) -> TaskStatus | None:
    """The status `event` moves a task to, or None when the event does not apply (or is refused).

    `current` is None before the task exists; `ended` says the task already has a terminal event
    (needed because `skip` is both a running and an end status).
    """
    if ended:
        return None
    match event:
        case TaskQueued():
            return "pending" if current is None else None
        case TaskStarted():
            return "running" if current == "pending" else None
        case TaskSkipped():
            return "skip" if current in ("running", "skip") else None
        case TaskFinished():
            if current not in ("running", "skip"):
                return None
            return "skip" if current == "skip" else "finished"
        case TaskStopped():
            return "stop" if current in ("running", "skip") else None
        case TaskFailed():
            # Failed at admission-free points too: a recovered task that never started fails from pending.
            return "failed" if current in ("pending", "running", "skip") else None
        case TaskCancelled():
            return "cancelled" if current == "pending" else None
        case _:
            return None
