"""The in-process bus: fans published events out to live subscribers on the event loop.

publish() never awaits and never blocks, so the runner is never slowed by a subscriber:
- listeners (the live projection) are plain callables applied first, in order, and never skip;
- stream subscribers get a bounded memory stream each. Progress events (with their previews) are
  dropped for a subscriber whose buffer is half full: a later one supersedes them, and the rest of
  the buffer is headroom for state events. A subscriber that cannot take a state event is cut off
  (closed) and can catch up from the log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from fooocus_es.events.types import Envelope, TaskProgress

Listener = Callable[[Envelope], None]


@dataclass(eq=False)  # identity hashing: subscribers live in a set
class Subscription:
    send: MemoryObjectSendStream[Envelope]
    receive: MemoryObjectReceiveStream[Envelope]
    task_id: str | None
    dropped_progress: int = 0
    lagged: bool = False


@dataclass
class Bus:
    listeners: list[Listener] = field(default_factory=list)
    subscriptions: set[Subscription] = field(default_factory=set)

    def add_listener(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def subscribe(self, task_id: str | None = None, maxsize: int = 64) -> Subscription:
        send, receive = anyio.create_memory_object_stream[Envelope](maxsize)
        subscription = Subscription(send, receive, task_id)
        self.subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscriptions.discard(subscription)
        subscription.send.close()

    def publish(self, envelope: Envelope) -> None:
        for listener in self.listeners:
            listener(envelope)
        event = envelope.event
        for sub in list(self.subscriptions):
            if sub.task_id is not None and sub.task_id != event.task_id:
                continue
            if isinstance(event, TaskProgress):
                stats = sub.send.statistics()
                if stats.current_buffer_used >= stats.max_buffer_size // 2:
                    sub.dropped_progress += 1  # a later progress event supersedes it
                    continue
            self._deliver(sub, envelope)

    def _deliver(self, sub: Subscription, envelope: Envelope) -> None:
        try:
            sub.send.send_nowait(envelope)
        except anyio.WouldBlock:
            sub.lagged = True
            self.unsubscribe(sub)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self.subscriptions.discard(sub)
