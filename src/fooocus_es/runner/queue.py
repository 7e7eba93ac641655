"""The command queue runners claim work from: its interface and the in-process implementation.

A claim is acked when the task's terminal event is stored, and released (back to the head of the
queue) when the runner gives it up before starting it. A JetStream work queue is the fleet's
implementation of the same interface (ack / nak).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from fooocus_es.tasks.commands import Generate


@runtime_checkable
class Claim(Protocol):
    command: Generate
    attempt: int  # how many times the command has been handed out (2 or more: its last runner went away)

    def ack(self) -> None: ...
    def release(self) -> None: ...


@runtime_checkable
class CommandQueue(Protocol):
    def put(self, command: Generate) -> None: ...

    def claim(self, runner_id: str, timeout: float | None = None) -> Claim | None:
        """Block until a command is free (None: timeout, or the queue was closed)."""
        ...

    def cancel(self, task_id: str) -> bool:
        """Remove a command nobody has claimed; True when it was there."""
        ...

    def pending(self) -> list[str]:
        """Task ids waiting, in queue order."""
        ...

    def wake(self) -> None:
        """End the claims waiting now early (they return None): a stopping runner needn't sit out its
        claim slice. Best-effort; a queue that cannot interrupt its wait does nothing."""
        ...

    def close(self) -> None: ...


@dataclass(eq=False)
class LocalClaim:
    command: Generate
    runner_id: str
    queue: LocalCommandQueue
    done: bool = False
    attempt: int = 1  # released commands were never started: in one process there is no takeover

    def ack(self) -> None:
        self.queue._finish(self, requeue=False)

    def release(self) -> None:
        self.queue._finish(self, requeue=True)


@dataclass
class LocalCommandQueue:
    _waiting: deque[Generate] = field(default_factory=deque)
    _claimed: dict[str, LocalClaim] = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _closed: bool = False
    _wakes: int = 0  # counts wake() calls: a waiting claim returns when it moves

    def put(self, command: Generate) -> None:
        with self._cond:
            self._waiting.append(command)
            self._cond.notify()

    def claim(self, runner_id: str, timeout: float | None = None) -> LocalClaim | None:
        with self._cond:
            wakes = self._wakes
            self._cond.wait_for(lambda: self._waiting or self._closed or self._wakes != wakes, timeout)
            if self._closed or not self._waiting:
                return None
            claim = LocalClaim(self._waiting.popleft(), runner_id, self)
            self._claimed[claim.command.task_id] = claim
            return claim

    def wake(self) -> None:
        with self._cond:
            self._wakes += 1
            self._cond.notify_all()

    def cancel(self, task_id: str) -> bool:
        with self._cond:
            for command in self._waiting:
                if command.task_id == task_id:
                    self._waiting.remove(command)
                    return True
            return False

    def pending(self) -> list[str]:
        with self._cond:
            return [command.task_id for command in self._waiting]

    def claimed(self) -> list[str]:
        with self._cond:
            return list(self._claimed)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _finish(self, claim: LocalClaim, *, requeue: bool) -> None:
        with self._cond:
            if claim.done:
                return
            claim.done = True
            self._claimed.pop(claim.command.task_id, None)
            if requeue and not self._closed:
                self._waiting.appendleft(claim.command)
                self._cond.notify()
