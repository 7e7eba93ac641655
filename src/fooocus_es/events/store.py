"""Append, then publish: the one way an event enters the system.

The event is durable (and generate_record updated in the same transaction) before any subscriber
sees it; publishing happens under the log's lock so subscribers see events in seq order even when
request threads and the runner thread emit at the same time.
"""

from __future__ import annotations

import anyio
import anyio.from_thread
import anyio.to_thread
import structlog
from anyio.lowlevel import EventLoopToken

from fooocus_es.events.bus import Bus
from fooocus_es.events.log import EventLog
from fooocus_es.events.types import Envelope, Event
from fooocus_es.projections import records

log = structlog.get_logger("fooocus_es.events")


class EventStore:
    def __init__(self, event_log: EventLog, bus: Bus | None = None, token: EventLoopToken | None = None) -> None:
        self.log = event_log
        self.bus = bus
        self.token = token

    def emit(self, event: Event) -> Envelope:
        """Append and publish. Call from a worker thread, never from the event loop itself."""
        published: list[Envelope] = []

        def publish(seq: int) -> None:
            envelope = Envelope(seq, event)
            published.append(envelope)
            if self.bus is None or self.token is None:
                return
            try:
                anyio.from_thread.run_sync(self.bus.publish, envelope, token=self.token)
            except RuntimeError:
                # The loop is gone (shutdown): the event is durable, live subscribers are gone too.
                log.warning("event.publish_skipped", task_id=event.task_id, seq=seq)

        self.log.append(event, project=records.apply, after_commit=publish)
        return published[0]

    async def emit_async(self, event: Event) -> Envelope:
        """From the event loop: the SQLite write runs in a worker thread."""
        return await anyio.to_thread.run_sync(self.emit, event)
