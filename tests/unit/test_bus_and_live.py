"""The bus's delivery policy and the live projection, on a real anyio loop."""

from __future__ import annotations

import anyio
import pytest

from fooocus_es.events.bus import Bus
from fooocus_es.events.types import Envelope, TaskFinished, TaskProgress, TaskQueued, TaskStarted
from fooocus_es.projections.live import LiveTasks
from fooocus_es.subscribers.waiters import Waiters


def env(seq: int, event) -> Envelope:
    return Envelope(seq, event)


def progress(task_id: str, i: int) -> TaskProgress:
    return TaskProgress(task_id=task_id, at_ms=i, percent=i, message=f"step {i}", preview="data:image/jpeg;base64,AA")


def test_slow_subscriber_drops_progress_but_keeps_the_end() -> None:
    async def main() -> None:
        bus = Bus()
        slow = bus.subscribe("t", maxsize=8)
        fast = bus.subscribe("t", maxsize=1000)
        other = bus.subscribe("someone-else", maxsize=8)
        bus.publish(env(1, TaskStarted(task_id="t", at_ms=0)))
        for i in range(200):
            bus.publish(env(2 + i, progress("t", i)))
        bus.publish(env(500, TaskFinished(task_id="t", at_ms=1, result=["outputs/x.png"])))
        got_slow = [e async for e in _drain(slow)]
        got_fast = [e async for e in _drain(fast)]
        assert isinstance(got_slow[-1].event, TaskFinished) and isinstance(got_slow[0].event, TaskStarted)
        assert len(got_slow) < 10 and slow.dropped_progress > 190
        assert len(got_fast) == 202
        assert other.receive.statistics().current_buffer_used == 0

    anyio.run(main)


async def _drain(sub):
    while True:
        try:
            yield sub.receive.receive_nowait()
        except anyio.WouldBlock:
            return


def test_a_subscriber_that_cannot_take_a_state_event_is_cut_off() -> None:
    async def main() -> None:
        bus = Bus()
        sub = bus.subscribe(None, maxsize=2)
        for i in range(3):
            bus.publish(env(i + 1, TaskStarted(task_id=f"t{i}", at_ms=0)))
        assert sub.lagged and sub not in bus.subscriptions

    anyio.run(main)


def test_live_projection_and_waiters() -> None:
    async def main() -> None:
        bus, live, waiters = Bus(), LiveTasks(), Waiters()
        bus.add_listener(live.apply)
        bus.add_listener(waiters.apply)
        done = waiters.expect("a")
        for seq, task in enumerate(["a", "b", "c"], start=1):
            bus.publish(env(seq, TaskQueued(task_id=task, at_ms=seq, params={"n": seq})))
        assert [r["task_id"] for r in live.pending_records()] == ["a", "b", "c"]
        assert [r["task_id"] for r in live.pending_records(page=1, page_size=2)] == ["c"]
        bus.publish(env(4, TaskStarted(task_id="a", at_ms=5)))
        bus.publish(env(5, progress("a", 42)))
        (current,) = live.current_records()
        assert current["task_status"] == "running" and current["progress"] == 42 and current["preview"]
        assert live.depth == 2 and not done.is_set()
        bus.publish(env(6, TaskFinished(task_id="a", at_ms=6, result=[])))
        assert done.is_set() and live.current_records() == [] and live.get("a") is None

    anyio.run(main)


@pytest.mark.parametrize("maxsize", [4, 16])
def test_progress_is_dropped_only_past_half_the_buffer(maxsize: int) -> None:
    async def main() -> None:
        bus = Bus()
        sub = bus.subscribe("t", maxsize=maxsize)
        for i in range(maxsize):
            bus.publish(env(i, progress("t", i)))
        assert sub.receive.statistics().current_buffer_used == maxsize // 2

    anyio.run(main)
