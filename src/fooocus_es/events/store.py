"""The write side: append an event, and (from the event loop) wait until it has been applied.

Appends never wait for the loop, so the runner is not slowed by a busy server; the follower
publishes what is durable, in log order.
"""

from __future__ import annotations

import anyio.to_thread

from fooocus_es.events.follower import LogFollower
from fooocus_es.events.log import EventLog, LiveChannel
from fooocus_es.events.types import Envelope, Event, TaskProgress


class EventStore:
    def __init__(self, event_log: EventLog, follower: LogFollower | None = None) -> None:
        self.log = event_log
        self.follower = follower

    def emit(self, event: Event, expected_version: int | None = None) -> int:
        """Append from a worker thread (never from the event loop); returns the seq."""
        return self.log.append(event, expected_version)

    @property
    def announces(self) -> bool:
        """Whether the log carries progress live instead of storing it (the fleet's JetStream log)."""
        return isinstance(self.log, LiveChannel)

    def announce(self, event: TaskProgress) -> None:
        """Progress to every follower, live only (worker thread); needs `announces`."""
        assert isinstance(self.log, LiveChannel)
        self.log.announce(event)

    async def emit_async(self, event: Event, expected_version: int | None = None) -> Envelope:
        """From the event loop: append in a worker thread, then wait until the follower applied it."""
        seq = await anyio.to_thread.run_sync(self.log.append, event, expected_version)
        if self.follower is not None:
            await self.follower.reached(seq)
        return Envelope(seq, event)
