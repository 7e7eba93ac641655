"""The CommandQueue contract, run against every implementation: in-process, and JetStream on a real
nats-server."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from fooocus_es.runner.jetstream_queue import JetStreamCommandQueue
from fooocus_es.runner.queue import CommandQueue, LocalCommandQueue
from fooocus_es.tasks.commands import COMMAND_DECODER, COMMAND_ENCODER, Cancel, Generate, Skip, Stop


@pytest.fixture(params=["local", "jetstream-debian", "jetstream-current"])
def queue(request: pytest.FixtureRequest) -> Iterator[CommandQueue]:
    if request.param == "local":
        made: CommandQueue = LocalCommandQueue()
    else:  # a stream per test on the session's nats-server
        name = uuid.uuid4().hex[:12]
        url = request.getfixturevalue("nats_servers")[request.param.split("-")[1]]
        made = JetStreamCommandQueue(url, stream=f"CMD_{name}", prefix=f"c{name}")
    yield made
    made.close()


def generate(task_id: str) -> Generate:
    return Generate(task_id=task_id, params={"prompt": task_id})


def test_commands_cross_a_process_boundary_as_tagged_json() -> None:
    for command in (generate("a"), Stop(task_id="a"), Skip(task_id="a"), Cancel(task_id="a")):
        assert COMMAND_DECODER.decode(COMMAND_ENCODER.encode(command)) == command
    assert b'"type":"Generate"' in COMMAND_ENCODER.encode(generate("a"))


def test_claims_come_in_queue_order_and_ack_removes(queue: CommandQueue) -> None:
    for task_id in "abc":
        queue.put(generate(task_id))
    assert queue.pending() == ["a", "b", "c"]
    claim = queue.claim("r1", timeout=1)
    assert claim is not None and claim.command.task_id == "a" and queue.pending() == ["b", "c"]
    claim.ack()
    claim.release()  # after an ack a release does nothing
    assert queue.pending() == ["b", "c"]


def test_a_released_claim_goes_back_to_the_head(queue: CommandQueue) -> None:
    queue.put(generate("a"))
    queue.put(generate("b"))
    claim = queue.claim("r1", timeout=1)
    assert claim is not None
    claim.release()
    again = queue.claim("r2", timeout=1)
    assert again is not None and again.command.task_id == "a"


def test_claim_waits_for_work_and_times_out(queue: CommandQueue) -> None:
    started = time.monotonic()
    assert queue.claim("r1", timeout=0.1) is None and time.monotonic() - started >= 0.09
    threading.Timer(0.1, queue.put, args=(generate("late"),)).start()
    claim = queue.claim("r1", timeout=5)
    assert claim is not None and claim.command.task_id == "late"


def test_cancel_removes_only_unclaimed_commands(queue: CommandQueue) -> None:
    queue.put(generate("a"))
    queue.put(generate("b"))
    claim = queue.claim("r1", timeout=1)
    assert claim is not None and claim.command.task_id == "a"
    assert queue.cancel("a") is False  # claimed: the log's version check decides that race
    assert queue.cancel("b") is True and queue.pending() == []
    assert queue.cancel("b") is False


def test_two_runners_never_claim_the_same_command(queue: CommandQueue) -> None:
    for i in range(200):
        queue.put(generate(f"t{i}"))
    claimed: dict[str, list[str]] = {"r1": [], "r2": []}

    def runner(name: str) -> None:
        while (claim := queue.claim(name, timeout=0.2)) is not None:
            claimed[name].append(claim.command.task_id)
            claim.ack()

    threads = [threading.Thread(target=runner, args=(name,)) for name in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = claimed["r1"] + claimed["r2"]
    assert sorted(everything) == sorted(f"t{i}" for i in range(200)) and len(set(everything)) == 200


def test_close_wakes_a_waiting_claimer(queue: CommandQueue) -> None:
    threading.Timer(0.1, queue.close).start()
    assert queue.claim("r1", timeout=5) is None


def test_wake_ends_a_local_claims_wait_and_the_queue_stays_open() -> None:
    queue = LocalCommandQueue()
    threading.Timer(0.1, queue.wake).start()
    started = time.monotonic()
    assert queue.claim("r1", timeout=5) is None
    assert time.monotonic() - started < 2  # woken, not timed out
    queue.put(generate("after"))
    claim = queue.claim("r1", timeout=1)  # a wake closes nothing
    assert claim is not None and claim.command.task_id == "after"
