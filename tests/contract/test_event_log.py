"""The EventLog contract, written once and run against every backend: SQLite, and JetStream on a
real nats-server (tests/nats_server.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from fooocus_es.events.jetstream import JetStreamEventLog
from fooocus_es.events.log import AppendRefused, EventLog, StaleVersion, TaskAlreadyEnded
from fooocus_es.events.sqlite import SqliteEventLog
from fooocus_es.events.types import (
    TaskCancelled,
    TaskProgress,
    TaskQueued,
    TaskStarted,
    TaskStopped,
)

# A backend factory: (folder) -> a log; called twice on one folder it gives two writers of one log.
Backend = Callable[[Path], EventLog]


def _jetstream(url: str) -> Backend:
    def make(folder: Path) -> EventLog:
        name = hashlib.sha256(str(folder).encode()).hexdigest()[:12]  # a stream per test, shared by its writers
        return JetStreamEventLog(url, stream=f"EV_{name}", prefix=f"t{name}.ev", poll_s=0.05)

    return make


@pytest.fixture(params=["sqlite", "jetstream-debian", "jetstream-current"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param.startswith("jetstream"):  # nats-server 2.9.10 (Debian) and a current one
        return _jetstream(request.getfixturevalue("nats_servers")[request.param.split("-")[1]])
    return lambda folder: SqliteEventLog(folder / "log.sqlite3", poll_s=0.05)


@pytest.fixture
def event_log(backend: Backend, tmp_path: Path) -> Iterator[EventLog]:
    log = backend(tmp_path)
    yield log
    log.close()


def queued(task_id: str) -> TaskQueued:
    return TaskQueued(task_id=task_id, at_ms=1, params={"prompt": task_id})


def test_seqs_increase_and_read_gives_log_order(event_log: EventLog) -> None:
    seqs = [event_log.append(queued(f"t{i}")) for i in range(5)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5 and event_log.last_seq() == seqs[-1]
    assert [e.event.task_id for e in event_log.read()] == [f"t{i}" for i in range(5)]
    assert [e.seq for e in event_log.read(after_seq=seqs[2])] == seqs[3:]
    assert [e.event.task_id for e in event_log.read(task_id="t3")] == ["t3"]


def test_versions_count_a_tasks_events_and_a_stale_expectation_is_refused(event_log: EventLog) -> None:
    assert event_log.version("a") == 0
    event_log.append(queued("a"), expected_version=0)
    event_log.append(TaskStarted(task_id="a", at_ms=2), expected_version=1)
    assert event_log.version("a") == 2
    with pytest.raises(StaleVersion) as refused:
        event_log.append(TaskCancelled(task_id="a", at_ms=3), expected_version=1)  # it started meanwhile
    assert (refused.value.expected, refused.value.actual) == (1, 2)
    with pytest.raises(StaleVersion):
        event_log.append(queued("a"), expected_version=0)  # the id is taken
    assert [type(e.event).__name__ for e in event_log.read(task_id="a")] == ["TaskQueued", "TaskStarted"]


def test_nothing_is_written_after_a_terminal_event(event_log: EventLog) -> None:
    event_log.append(queued("a"))
    event_log.append(TaskCancelled(task_id="a", at_ms=2))
    for late in (TaskStarted(task_id="a", at_ms=3), TaskProgress(task_id="a", at_ms=3, percent=1, message="")):
        with pytest.raises(TaskAlreadyEnded):
            event_log.append(late)  # with no expectation, too
    assert event_log.version("a") == 2


def test_of_a_cancel_racing_a_start_exactly_one_wins(event_log: EventLog) -> None:
    for round_ in range(20):
        task_id = f"race{round_}"
        event_log.append(queued(task_id), expected_version=0)
        barrier = threading.Barrier(2)
        won: list[str] = []

        def write(
            event: TaskStarted | TaskCancelled, barrier: threading.Barrier = barrier, won: list[str] = won
        ) -> None:
            barrier.wait()
            with contextlib.suppress(AppendRefused):  # a stale version, or already ended (cancelled first)
                event_log.append(event, expected_version=1)
                won.append(type(event).__name__)

        threads = [
            threading.Thread(target=write, args=(TaskStarted(task_id=task_id, at_ms=2),)),
            threading.Thread(target=write, args=(TaskCancelled(task_id=task_id, at_ms=2),)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(won) == 1 and event_log.version(task_id) == 2


def test_concurrent_writers_get_unique_seqs_and_versions(event_log: EventLog) -> None:
    def worker(prefix: str) -> None:
        event_log.append(queued(prefix), expected_version=0)
        for i in range(100):
            event_log.append(TaskProgress(task_id=prefix, at_ms=i, percent=i, message=""))

    threads = [threading.Thread(target=worker, args=(p,)) for p in "abc"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    envelopes = list(event_log.read())
    assert len(envelopes) == 303 and [e.seq for e in envelopes] == sorted({e.seq for e in envelopes})
    assert all(event_log.version(p) == 101 for p in "abc")


def test_tail_gives_stored_events_then_follows_new_ones_in_order(event_log: EventLog) -> None:
    first = event_log.append(queued("a"))
    event_log.append(TaskStarted(task_id="a", at_ms=2))
    seen: list[int] = []

    async def follow() -> None:
        with anyio.fail_after(10):
            async for batch in event_log.tail(first - 1):
                seen.extend(e.seq for e in batch)
                if len(seen) == 2:  # the stored ones came; now write more from another thread
                    await anyio.to_thread.run_sync(
                        lambda: [event_log.append(TaskProgress(task_id="a", at_ms=3, percent=i, message=""))
                                 for i in range(3)]  # fmt: skip
                    )
                if len(seen) == 5:
                    return

    anyio.run(follow)
    assert seen == sorted(seen) and len(set(seen)) == 5 and seen[0] == first


def test_tail_sees_another_writers_events(backend: Backend, tmp_path: Path) -> None:
    """Another writer (another process tomorrow: a second log object on the same store today)."""
    ours, theirs = backend(tmp_path), backend(tmp_path)
    ours.append(queued("a"))
    got: list[str] = []

    async def follow() -> None:
        with anyio.fail_after(10):
            async for batch in ours.tail(ours.last_seq()):
                got.extend(e.event.task_id for e in batch)
                return

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(follow)
            await anyio.sleep(0.1)
            await anyio.to_thread.run_sync(theirs.append, queued("b"))

    anyio.run(main)
    assert got == ["b"]
    ours.close()
    theirs.close()


def test_previews_reach_followers_but_are_not_stored(event_log: EventLog) -> None:
    event_log.append(queued("a"))
    event_log.append(TaskStarted(task_id="a", at_ms=2))
    seq = event_log.append(
        TaskProgress(task_id="a", at_ms=3, percent=50, message="", preview="data:image/jpeg;base64,AAAA")
    )
    event_log.append(TaskStopped(task_id="a", at_ms=4))
    followed: list = []

    async def follow() -> None:
        async for batch in event_log.tail(seq - 1):
            followed.extend(batch)
            return

    anyio.run(follow)
    assert followed[0].event.preview == "data:image/jpeg;base64,AAAA"
    stored = [e.event for e in event_log.read(task_id="a") if isinstance(e.event, TaskProgress)]
    assert stored[0].preview is None  # the log itself never holds previews
    assert isinstance(followed[-1].event, TaskStopped)
