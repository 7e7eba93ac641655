"""The JetStream backends across a nats-server kill -9 and restart: clients reconnect by
themselves, nothing stored is lost, a retried append is not doubled, and work continues."""

from __future__ import annotations

import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from nats_server import NatsServer

from fooocus_es.events.jetstream import JetStreamEventLog
from fooocus_es.events.types import TaskProgress, TaskQueued, TaskStarted
from fooocus_es.runner.jetstream_queue import JetStreamCommandQueue
from fooocus_es.tasks.commands import Generate


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A server of this test's own (the session's is shared and must not be killed)."""
    server = NatsServer(tmp_path).start()
    yield server
    server.stop()


def _kill_and_restart(server: NatsServer) -> None:
    assert server.process is not None
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=10)
    server.start()  # same port, same store folder


def test_the_log_and_the_queue_survive_a_server_kill(own_server: NatsServer) -> None:
    log = JetStreamEventLog(own_server.url, poll_s=0.05)
    queue = JetStreamCommandQueue(own_server.url, ack_wait_s=2)
    log.append(TaskQueued(task_id="a", at_ms=1, params={}), expected_version=0)
    log.append(TaskQueued(task_id="b", at_ms=1, params={}), expected_version=0)
    queue.put(Generate(task_id="a", params={}))
    queue.put(Generate(task_id="b", params={}))
    claim = queue.claim("r1", timeout=5)
    assert claim is not None and claim.command.task_id == "a"
    claim.ack()

    _kill_and_restart(own_server)

    # Appends made while the client is reconnecting wait for it; the stored events are all there.
    log.append(TaskStarted(task_id="b", at_ms=2), expected_version=1)
    assert log.version("a") == 1 and log.version("b") == 2
    assert [e.event.task_id for e in log.read()] == ["a", "b", "b"]
    again = queue.claim("r1", timeout=10)
    assert again is not None and again.command.task_id == "b"  # the acked one is gone, the other waits
    again.ack()
    assert queue.claim("r1", timeout=0.5) is None
    queue.close()
    log.close()


def test_a_tail_follows_across_a_server_restart(own_server: NatsServer) -> None:
    log = JetStreamEventLog(own_server.url, poll_s=0.05)
    writer = JetStreamEventLog(own_server.url)
    log.append(TaskQueued(task_id="a", at_ms=1, params={}))
    seen: list[int] = []
    restarted = threading.Event()

    async def follow() -> None:
        with anyio.fail_after(30):
            async for batch in log.tail(0):
                seen.extend(e.seq for e in batch)
                if len(seen) == 1:
                    await anyio.to_thread.run_sync(_kill_and_restart, own_server)
                    restarted.set()
                    await anyio.to_thread.run_sync(
                        lambda: [
                            writer.append(TaskProgress(task_id="a", at_ms=2, percent=i, message="")) for i in range(3)
                        ]
                    )
                if len(seen) == 4:
                    return

    anyio.run(follow)
    assert restarted.is_set() and seen == sorted(seen) and len(set(seen)) == 4
    writer.close()
    log.close()


def test_previews_reach_a_follower_on_another_node_but_not_the_stream(nats_url: str) -> None:
    name = uuid.uuid4().hex[:12]
    writer = JetStreamEventLog(nats_url, stream=f"PV_{name}", prefix=f"p{name}.ev")
    follower = JetStreamEventLog(nats_url, stream=f"PV_{name}", prefix=f"p{name}.ev", poll_s=0.05)
    writer.append(TaskQueued(task_id="a", at_ms=1, params={}))
    seq = writer.append(
        TaskProgress(task_id="a", at_ms=2, percent=50, message="", preview="data:image/jpeg;base64,QQ==")
    )
    seen: list = []

    async def follow() -> None:
        with anyio.fail_after(10):
            async for batch in follower.tail(seq - 1):
                seen.extend(batch)
                return

    anyio.run(follow)
    assert seen[0].event.preview == "data:image/jpeg;base64,QQ=="
    assert [e.event.preview for e in follower.read(task_id="a") if isinstance(e.event, TaskProgress)] == [None]
    writer.close()
    follower.close()


def test_announced_progress_reaches_other_nodes_live_and_is_never_stored(nats_url: str) -> None:
    name = uuid.uuid4().hex[:12]
    runner = JetStreamEventLog(nats_url, stream=f"AN_{name}", prefix=f"a{name}.ev")
    node = JetStreamEventLog(nats_url, stream=f"AN_{name}", prefix=f"a{name}.ev", poll_s=0.05)
    seq = runner.append(TaskQueued(task_id="a", at_ms=1, params={}))
    seen: list = []

    async def follow() -> None:
        with anyio.fail_after(10):
            async for batch in node.tail(0):
                seen.extend(batch)
                if len(seen) == 1:  # the stored TaskQueued: now the runner announces a step
                    step = TaskProgress(task_id="a", at_ms=2, percent=40, message="step", preview="data:x")
                    await anyio.to_thread.run_sync(runner.announce, step)
                if len(seen) == 2:
                    return

    anyio.run(follow)
    assert isinstance(seen[1].event, TaskProgress) and seen[1].event.preview == "data:x"
    assert seen[1].seq == seq  # under the last stored seq: announced events take no place in the log
    assert runner.version("a") == 1 and len(list(node.read())) == 1
    runner.close()
    node.close()
