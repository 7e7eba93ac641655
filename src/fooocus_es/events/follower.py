"""The log's follower in this process: it feeds the read model and then the bus from the log's tail.

So every event reaches projections, waiters and streams in log order, after it is durable, whoever
wrote it (a request thread, the runner thread, another process). A writer on the event loop that
needs its own event applied before it answers (admission shows the queued task at once) awaits
`reached(seq)`.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence

import anyio
import anyio.to_thread
import structlog
from anyio.abc import TaskStatus

from fooocus_es.events.bus import Bus
from fooocus_es.events.log import EventLog
from fooocus_es.events.types import Envelope, TaskProgress
from fooocus_es.ops.storage import StorageHealth, until_stored
from fooocus_es.projections.records import ReadModel

log = structlog.get_logger("fooocus_es.events")


class LogFollower:
    def __init__(
        self,
        event_log: EventLog,
        bus: Bus,
        read_model: ReadModel | None = None,
        *,
        storage: StorageHealth | None = None,
    ) -> None:
        self.log = event_log
        self.bus = bus
        self.read_model = read_model
        self.storage = storage
        self.position = 0  # the last seq handed to the bus
        self._waiting: list[tuple[int, int, anyio.Event]] = []  # (seq, tie-break, event) min-heap
        self._order = itertools.count()

    async def run(self, from_seq: int, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self.position = from_seq
        task_status.started()
        async for batch in self.log.tail(from_seq):
            await self.deliver(batch)

    async def deliver(self, batch: Sequence[Envelope]) -> None:
        read_model = self.read_model
        if read_model is not None and any(not isinstance(e.event, TaskProgress) for e in batch):
            # A locked or full database stalls the table (and the bus after it), never ends the follower;
            # applying is idempotent (positions), so retrying a batch is safe.
            await until_stored(self.storage, "log", lambda: anyio.to_thread.run_sync(read_model.apply, batch))
        for envelope in batch:
            self.bus.publish(envelope)
        self.position = batch[-1].seq
        while self._waiting and self._waiting[0][0] <= self.position:
            heapq.heappop(self._waiting)[2].set()

    async def reached(self, seq: int) -> None:
        """Return once the event at `seq` has been applied and published."""
        if seq <= self.position:
            return
        done = anyio.Event()
        heapq.heappush(self._waiting, (seq, next(self._order), done))
        await done.wait()
