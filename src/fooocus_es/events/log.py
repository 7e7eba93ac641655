"""The event log's interface: what a backend (SQLite here, JetStream for a fleet) provides.

Every task state change is one appended event. A task's events are numbered 1, 2, ... (its
version); an append names the version it expects to follow, so of two writers that read the same
state only one can write (a cancel racing a start), and nothing is written after a terminal event.
Readers either read what is stored (`read`) or follow the log (`tail`): stored events in order,
then new ones as they are written by any writer, so the bus, projections and subscribers are fed
from what is durable, never from whoever appended.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Protocol, runtime_checkable

from fooocus_es.events.types import Envelope, Event, TaskProgress


class AppendRefused(Exception):
    """The log did not take the event; nothing was written."""

    def __init__(self, task_id: str, message: str) -> None:
        super().__init__(f"task {task_id}: {message}")
        self.task_id = task_id


class StaleVersion(AppendRefused):
    """Another writer got there first: the task is not at the version the writer expected."""

    def __init__(self, task_id: str, expected: int, actual: int) -> None:
        super().__init__(task_id, f"expected version {expected}, the log is at {actual}")
        self.expected, self.actual = expected, actual


class TaskAlreadyEnded(AppendRefused):
    """The task has a terminal event: it takes no more events."""

    def __init__(self, task_id: str, version: int) -> None:
        super().__init__(task_id, f"already ended (version {version})")
        self.version = version


@runtime_checkable  # Litestar checks injected values with isinstance
class EventLog(Protocol):
    def append(self, event: Event, expected_version: int | None = None) -> int:
        """Durably append `event`; returns its seq (the total order across tasks).

        `expected_version` is the task's version the writer has seen (0: the task must not exist);
        None skips that check (the terminal guard always applies). Raises AppendRefused.
        """
        ...

    def version(self, task_id: str) -> int:
        """How many events the task has (0: none)."""
        ...

    def last_seq(self) -> int: ...

    def read(self, *, after_seq: int = 0, task_id: str | None = None) -> Iterator[Envelope]:
        """Stored events after `after_seq` in log order (of one task, or all)."""
        ...

    def tail(self, from_seq: int) -> AsyncIterator[list[Envelope]]:
        """Batches of stored events after `from_seq` in order, then new ones as they are stored.

        Runs on the event loop; it ends when cancelled. Live-only parts of events (previews) are
        attached when this process wrote them.
        """
        ...

    def close(self) -> None: ...


@runtime_checkable
class LiveChannel(Protocol):
    """A log that can also carry progress live, never stored (a fleet: one stored event per step
    and task would be most of the stream). Its followers' tails deliver announced events in
    arrival order, under the seq of the last stored event they saw."""

    def announce(self, event: TaskProgress) -> None: ...


def pages(envelopes: Iterable[Envelope], size: int = 1000) -> Iterator[list[Envelope]]:
    """Envelopes in lists of `size` (the last one shorter), for consumers that apply them in batches."""
    page: list[Envelope] = []
    for envelope in envelopes:
        page.append(envelope)
        if len(page) == size:
            yield page
            page = []
    if page:
        yield page
