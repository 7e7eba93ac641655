"""Waiters for the blocking return modes: an anyio.Event per task, set by its terminal event.

A bus listener (applied inline, never dropped), so a blocked request cannot miss the end of its task.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio

from fooocus_es.events.types import Envelope, is_terminal


@dataclass
class Waiters:
    _events: dict[str, anyio.Event] = field(default_factory=dict)

    def expect(self, task_id: str) -> anyio.Event:
        """Register before the task can end (i.e. before it is submitted)."""
        return self._events.setdefault(task_id, anyio.Event())

    def discard(self, task_id: str) -> None:
        self._events.pop(task_id, None)

    def apply(self, envelope: Envelope) -> None:
        if is_terminal(envelope.event):
            waiter = self._events.pop(envelope.event.task_id, None)
            if waiter is not None:
                waiter.set()
