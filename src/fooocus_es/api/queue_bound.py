"""The queue bound, taken atomically: N concurrent submits over a bound of K accept exactly the free
places and answer 429 to the rest.

A place is taken on the event loop with no await between the check and the take, and held until
the task's Generate command is in the command queue (or the admission failed), so the count is the
admissions in flight plus the commands waiting, both exact at any instant (the live view trails
the log by a few ms and would let a burst through).
"""

from __future__ import annotations

from collections.abc import Callable


class QueueBound:
    def __init__(self, size: int, waiting: Callable[[], int]) -> None:
        self.size = size
        self.waiting = waiting  # commands queued and not yet claimed by a runner
        self.admitting = 0  # places held by admissions in flight

    def taken(self) -> int:
        return self.admitting + self.waiting()

    def take(self) -> bool:
        """Hold a place (on the event loop, with no await before it is used); False when none is free."""
        if self.taken() >= self.size:
            return False
        self.admitting += 1
        return True

    def release(self) -> None:
        """The admission ended: its command is in the queue (counted there now) or it failed."""
        self.admitting -= 1
