"""GET /tasks/{task_id}/stream: one task's events as a resumable SSE stream.

Each message is `id: <log seq>`, `event: <event type>`, `data: <the event as /tasks/{id}/events
gives it>` (live progress carries its preview). A client that reconnects with `Last-Event-ID`
gets what it missed from the log, then the live events; the stream ends after the terminal event.
FooocusAPI's own stream (/v1/engine/generate/ with stream_output) keeps its framing, no `id:` lines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import msgspec
from litestar import get
from litestar.di import NamedDependency
from litestar.params import Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from fooocus_es.api import examples
from fooocus_es.api.errors import NotFound
from fooocus_es.api.openapi_ops import operation, sse_events
from fooocus_es.events.types import Envelope, event_type, is_terminal

if TYPE_CHECKING:  # resolved through the signature namespace (api/deps.py)
    from fooocus_es.events.bus import Bus
    from fooocus_es.events.log import EventLog
    from fooocus_es.services import Services

_ENCODER = msgspec.json.Encoder()


def message(envelope: Envelope) -> ServerSentEventMessage:
    body = {"seq": envelope.seq, "type": event_type(envelope.event), **msgspec.to_builtins(envelope.event)}
    return ServerSentEventMessage(data=_ENCODER.encode(body).decode(), event=body["type"], id=envelope.seq)


def _resume_after(last_event_id: str | None) -> int:
    text = (last_event_id or "").strip()
    return int(text) if text.isdigit() else 0  # anything else: from the start


@get(
    "/{task_id:str}/stream",
    summary="The task's events as SSE (id = log seq), resumable with Last-Event-ID",
    description="Replays the task's stored events after `Last-Event-ID` (all of them without it), then "
    "follows it live until its terminal event. Reconnecting with the last `id:` seen loses nothing.",
    responses=examples.STREAM_RESPONSES,
    operation_class=operation(content={"200": {"text/event-stream": sse_events("data is the event as JSON")}}),
)
async def task_stream(
    task_id: str,
    bus: NamedDependency[Bus],
    event_log: NamedDependency[EventLog],
    services: NamedDependency[Services],
    last_event_id: str | None = Parameter(header="Last-Event-ID", default=None, required=False),
) -> ServerSentEvent:
    after = _resume_after(last_event_id)
    subscription = bus.subscribe(task_id, maxsize=256)  # before reading: nothing falls between
    try:
        stored = await anyio.to_thread.run_sync(lambda: list(event_log.read(task_id=task_id)))
    except BaseException:
        bus.unsubscribe(subscription)
        raise
    if not stored or await services.record(task_id) is None:  # none, or deleted (its events stay in the log)
        bus.unsubscribe(subscription)
        raise NotFound(f"task_id: no task {task_id!r}")

    async def events() -> AsyncIterator[ServerSentEventMessage]:
        last = after
        try:
            for envelope in stored:
                if envelope.seq > last:
                    yield message(envelope)
                    last = envelope.seq
            if is_terminal(stored[-1].event):
                return
            async for envelope in subscription.receive:
                if envelope.seq <= last:
                    continue  # published while the log was read: sent already
                yield message(envelope)
                last = envelope.seq
                if is_terminal(envelope.event):
                    return
            # Cut off for lagging: the client reconnects with Last-Event-ID and loses nothing.
        finally:
            bus.unsubscribe(subscription)

    headers: dict[str, Any] = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return ServerSentEvent(events(), headers=headers)
