"""Task events: every state change of a task is one of these, appended to the log before it is published.

msgspec tagged unions: the `type` field on the wire and in the log names the class.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import msgspec


def now_ms() -> int:
    """Wall-clock ms for `at_ms` (informational: order comes from seq, never from clocks)."""
    return int(time.time() * 1000)


class _Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", omit_defaults=True):
    task_id: str
    at_ms: int


class TaskQueued(_Event, tag="TaskQueued"):
    """Accepted and durable. `params` is the normalised request, images replaced by inputs/ URLs."""

    params: dict[str, Any]
    webhook_url: str = ""
    notes: list[str] = []  # what admission ignored or changed (unknown fields, ...)
    wire: str = ""  # the API that admitted it: "" FooocusAPI, "fooocus-api/<route>", "openai"


class TaskStarted(_Event, tag="TaskStarted"):
    device: str = ""
    attempt: int = 1  # 2 or more: re-run after the runner of the previous attempt went away (a fleet)
    runner: str = ""  # the runner's id (host-pid-device): which machine ran it


ProgressStage = Literal["", "downloading", "loading", "preparing", "sampling", "saving"]


class TaskProgress(_Event, tag="TaskProgress"):
    """Where a running task is. The fields are the data; `message` is FooocusAPI's wording of them.

    Rows logged before the structured fields existed decode with their defaults ("" / 0).
    """

    percent: int
    message: str
    step: int = 0  # 1-based sampling step of the current image
    steps: int = 0
    image_index: int = 0  # 0-based image being sampled or saved
    image_count: int = 0
    stage: ProgressStage = ""
    # Previews are carried to live subscribers only; the log stores the event without them.
    preview: str | None = None


class TaskSkipped(_Event, tag="TaskSkipped"):
    """One image of the task was abandoned on request; the task goes on with the next image."""

    image_index: int


class TaskFinished(_Event, tag="TaskFinished"):
    result: list[str]  # output paths relative to the data dir: outputs/YYYY-MM-DD/<file>
    notes: list[str] = []
    text: str = ""  # a tool task's text answer (describe-image's caption); generations have none


class TaskStopped(_Event, tag="TaskStopped"):
    """Stopped on request while running: images already finished are kept."""

    result: list[str] = []


class TaskFailed(_Event, tag="TaskFailed"):
    error_type: str
    message: str
    result: list[str] = []


class TaskCancelled(_Event, tag="TaskCancelled"):
    """Removed from the queue before it started."""


class TasksDeleted(_Event, tag="TasksDeleted"):
    """History records (and their output files) removed by /tasks?action=delete.

    task_id is the deletion's own id; the removed tasks are listed.
    """

    deleted_task_ids: list[str]
    start_ms: int
    end_ms: int


Event = (
    TaskQueued
    | TaskStarted
    | TaskProgress
    | TaskSkipped
    | TaskFinished
    | TaskStopped
    | TaskFailed
    | TaskCancelled
    | TasksDeleted
)

TERMINAL_EVENTS: tuple[type, ...] = (TaskFinished, TaskStopped, TaskFailed, TaskCancelled)
TERMINAL_TYPES: frozenset[str] = frozenset(cls.__struct_config__.tag for cls in TERMINAL_EVENTS)

EVENT_DECODER = msgspec.json.Decoder(Event)
EVENT_ENCODER = msgspec.json.Encoder()


def is_terminal(event: Event) -> bool:
    return isinstance(event, TERMINAL_EVENTS)


def event_type(event: Event) -> str:
    return type(event).__struct_config__.tag  # type: ignore[return-value]


def encode_for_log(event: Event) -> bytes:
    """The durable form: previews stripped (they are large and only meaningful live)."""
    if isinstance(event, TaskProgress) and event.preview is not None:
        event = msgspec.structs.replace(event, preview=None)
    return EVENT_ENCODER.encode(event)


def decode_event(payload: bytes | str) -> Event:
    return EVENT_DECODER.decode(payload)


class Envelope(msgspec.Struct, frozen=True):
    """An event with its position in the log, as the bus delivers it."""

    seq: int
    event: Event
