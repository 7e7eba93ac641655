"""The JetStream backends on a 3-node cluster with every stream at 3 replicas, losing a stream's
leader (SIGKILL) while clients use it: after the election nothing stored is lost or doubled, the
per-task version check still refuses a stale writer, the queue hands each command out once and
the object store still serves what it held (fleet.md §5, "R3 on loopback").

Runs on the current nats-server only: R3 compare-and-set is unsafe on 2.9.10 (nats-server#4320).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
from nats.js.errors import APIError
from nats_server import NatsCluster
from structlog.testing import capture_logs

from fooocus_es.events.jetstream import (
    EXPECTED_LAST_SUBJECT_SEQ,
    VERSION_HEADER,
    WRONG_LAST_SEQUENCE,
    JetStreamEventLog,
)
from fooocus_es.events.log import StaleVersion
from fooocus_es.events.types import Envelope, TaskProgress, TaskQueued
from fooocus_es.fleet.backends import open_backends
from fooocus_es.fleet.connection import NatsThread, NatsUnavailable
from fooocus_es.fleet.presence import FleetRunners
from fooocus_es.fleet.webhook_claims import WebhookClaims
from fooocus_es.media.object_store import ObjectStoreBlobs
from fooocus_es.runner.jetstream_queue import JetStreamCommandQueue
from fooocus_es.settings import Settings
from fooocus_es.tasks.commands import Generate

TASKS = 16
WRITE_LIMIT = 2000  # appends per writer at most: every loop here is bounded in count and in time
PACE_S = 0.02  # between one writer's appends (about 50 a second each, on 2 shared cores)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    started = NatsCluster(tmp_path_factory.mktemp("nats-cluster")).start()
    yield started
    started.stop()


@pytest.fixture
def healthy(cluster: NatsCluster) -> NatsCluster:
    """Every test starts on three live, current nodes (a failed test may have left one down)."""
    for node in range(len(cluster.NAMES)):
        if not cluster.alive(node):
            cluster.restart(node)
    cluster.wait_ready()
    return cluster


def _until(check: Callable[[], bool], timeout_s: float, what: str, state: Callable[[], object] = str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what} ({state()})")
        time.sleep(0.05)


def _replicas(nats: NatsThread, stream: str) -> tuple[int, int]:
    """The stream's configured replicas and how many peers its Raft group has besides the leader."""
    info = nats.call(nats.js.stream_info(stream))
    return info.config.num_replicas or 1, len(info.cluster.replicas or []) if info.cluster else 0


def test_open_backends_gives_every_stream_and_bucket_the_replicas(healthy: NatsCluster, tmp_path: Path) -> None:
    settings = Settings(log_url=healthy.url, replicas=3, data_dir=tmp_path, pool="r3")
    with capture_logs() as logs:
        backends = open_backends(settings)
        assert backends.nats is not None
        WebhookClaims(backends.nats, tmp_path, replicas=settings.replicas)
        FleetRunners(backends.nats, replicas=settings.replicas).recent()
    assert [e for e in logs if e["event"] == "nats.replicas_differ"] == []
    streams = ["FES_EVENTS", "FES_CMDS", "OBJ_fes-blobs", "KV_fes-blobs-names", "KV_fes-webhooks", "KV_fes-runners"]
    assert {stream: _replicas(backends.nats, stream) for stream in streams} == dict.fromkeys(streams, (3, 2))
    backends.close()


@dataclass
class Writer:
    """Appends progress events to random tasks until told to stop; each event's message is unique,
    so every append can be found in the log afterwards."""

    name: str
    log: JetStreamEventLog
    tasks: list[str]
    stop: threading.Event
    landed: dict[str, int] = field(default_factory=dict)  # marker -> the seq append returned
    failed: dict[str, str] = field(default_factory=dict)  # marker -> the error it raised
    crashed: str | None = None  # an error that is not "NATS did not answer": the test fails on it
    slowest_s: float = 0.0

    def run(self) -> None:
        pick = random.Random(self.name)
        for i in range(WRITE_LIMIT):
            if self.stop.is_set():
                return
            marker = f"{self.name}-{i}"
            task_id = pick.choice(self.tasks)
            started = time.monotonic()
            try:
                # No expected version: two writers race on one subject and the append re-reads and
                # retries on "wrong last sequence" (the server's compare-and-set decides each one).
                self.landed[marker] = self.log.append(TaskProgress(task_id=task_id, at_ms=i, percent=0, message=marker))
            except NatsUnavailable as exc:
                self.failed[marker] = str(exc)
                time.sleep(0.1)
            except Exception as exc:  # noqa: BLE001 - a refusal or a bug: reported by the test thread
                self.failed[marker] = self.crashed = f"{type(exc).__name__}: {exc}"
                return
            self.slowest_s = max(self.slowest_s, time.monotonic() - started)
            time.sleep(PACE_S)

    @property
    def done(self) -> int:
        return len(self.landed) + len(self.failed)


def _stored(log: JetStreamEventLog) -> list[tuple[int, str, int, Envelope]]:
    """Every stored message, raw: (seq, task id, its Fes-Version header, the decoded envelope)."""
    from fooocus_es.events.types import decode_event

    async def fetch() -> list[tuple[int, str, int, Envelope]]:
        js = log.nats.js
        last = int((await js.stream_info(log.stream)).state.last_seq)
        found = []
        for seq in range(1, last + 1):
            msg = await js.get_msg(log.stream, seq)
            task_id = (msg.subject or "").rsplit(".", 1)[1]
            version = int((msg.headers or {}).get(VERSION_HEADER, 0))
            found.append((seq, task_id, version, Envelope(seq, decode_event(msg.data or b""))))
        return found

    return log.nats.call(fetch(), timeout_s=60)


def test_appends_survive_losing_the_stream_leader_mid_publish(healthy: NatsCluster, tmp_path: Path) -> None:
    cluster = healthy
    log = JetStreamEventLog(cluster.url, replicas=3, poll_s=0.05)
    assert _replicas(log.nats, log.stream) == (3, 2)
    tasks = [f"t{i}" for i in range(TASKS)]
    for task_id in tasks:
        log.append(TaskQueued(task_id=task_id, at_ms=0, params={}), expected_version=0)

    # A follower on its own connection, from the start of the log, all through the failover.
    follower = JetStreamEventLog(cluster.url, replicas=3, poll_s=0.05)
    seen: list[int] = []
    tail_done = threading.Event()
    tail_until = [0]  # the last seq to wait for, set once the writers stop
    tail_error: list[BaseException] = []

    async def follow() -> None:
        async def caught_up(scope: anyio.CancelScope) -> None:
            while not (tail_until[0] and seen and seen[-1] >= tail_until[0]):
                await anyio.sleep(0.05)
            scope.cancel()

        with anyio.fail_after(50):
            async with anyio.create_task_group() as group:
                group.start_soon(caught_up, group.cancel_scope)
                async for batch in follower.tail(0):
                    seen.extend(envelope.seq for envelope in batch)

    def tail() -> None:
        try:
            anyio.run(follow)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            tail_error.append(exc)
        finally:
            tail_done.set()

    stop = threading.Event()
    writers = [Writer(f"w{k}", JetStreamEventLog(cluster.url, replicas=3), tasks, stop) for k in range(2)]
    # w1 is impatient: a 1 s request timeout (its appends give up within about 6 s), so some of them
    # raise during the election, and may still have landed: those must be stored at most once.
    impatient = writers[1].log.nats
    impatient.timeout_s = 1.0
    impatient.js = impatient.nc.jetstream(timeout=1.0)
    threads = [threading.Thread(target=w.run, name=w.name) for w in writers]
    threads.append(threading.Thread(target=tail, name="tail"))
    for thread in threads:
        thread.start()
    try:
        _until(lambda: all(len(w.landed) >= 30 for w in writers), 15, "30 appends per writer before the kill")
        leader = cluster.stream_leader(log.stream)
        before = [w.done for w in writers]
        t_kill = time.monotonic()
        cluster.kill(leader)  # the writers are publishing right now
        new_leader = cluster.stream_leader(log.stream)
        assert new_leader != leader
        landed_at_kill = [len(w.landed) for w in writers]
        print(f"\nelected in {time.monotonic() - t_kill:.2f} s; seen {len(seen)}")
        _until(
            lambda: all(len(w.landed) >= n + 30 for w, n in zip(writers, landed_at_kill, strict=True)),
            30,
            "30 appends per writer after the election",
            lambda: [(w.name, len(w.landed), w.crashed, list(w.failed.values())[-2:]) for w in writers],
        )
        cluster.restart(leader)  # it rejoins as a follower and catches up while the writers go on
        landed_at_restart = [len(w.landed) for w in writers]
        print(f"restarted at {time.monotonic() - t_kill:.2f} s; seen {len(seen)}")
        _until(
            lambda: all(len(w.landed) >= n + 30 for w, n in zip(writers, landed_at_restart, strict=True)),
            20,
            "30 appends per writer after the restart",
            lambda: [(w.name, len(w.landed), w.crashed, list(w.failed.values())[-2:]) for w in writers],
        )
    finally:
        stop.set()
        for thread in threads[:-1]:
            thread.join(timeout=40)
    assert [w.crashed for w in writers] == [None, None]
    assert all(n > 0 for n in before), "the kill came while both writers were appending"

    stored = _stored(log)
    tail_until[0] = stored[-1][0]
    assert tail_done.wait(30) and not tail_error, (tail_error, len(seen), seen[-3:], tail_until[0])

    # Every append that returned a seq is stored exactly once, at that seq; one that raised is
    # stored at most once; nothing is stored that no writer sent.
    markers = Counter(env.event.message for _, _, _, env in stored if isinstance(env.event, TaskProgress))
    landed = {marker: seq for w in writers for marker, seq in w.landed.items()}
    failed = {marker for w in writers for marker in w.failed}
    by_marker = {env.event.message: seq for seq, _, _, env in stored if isinstance(env.event, TaskProgress)}
    assert all(markers[marker] == 1 and by_marker[marker] == seq for marker, seq in landed.items())
    assert all(markers[marker] <= 1 for marker in failed)
    assert set(markers) <= set(landed) | failed and max(markers.values()) == 1

    # Per task, the versions in stream order are 1..n: no gap, no duplicate.
    versions: dict[str, list[int]] = defaultdict(list)
    for _, task_id, version, _ in stored:
        versions[task_id].append(version)
    assert set(versions) == set(tasks)
    assert all(found == list(range(1, len(found) + 1)) for found in versions.values()), versions
    assert {task_id: log.version(task_id) for task_id in tasks} == {t: len(v) for t, v in versions.items()}

    # read() gives the same log, and the follower saw every stored event once, in order.
    assert [(e.seq, e.event) for e in log.read()] == [(env.seq, env.event) for _, _, _, env in stored]
    assert seen == [seq for seq, _, _, _ in stored]

    # The compare-and-set still refuses a stale writer after the failover, in the log's check and
    # at the server (a raw publish naming an old last seq of the task's subject).
    stale_task = tasks[0]
    with pytest.raises(StaleVersion):
        log.append(TaskProgress(task_id=stale_task, at_ms=9, percent=0, message="stale"), expected_version=1)
    old_seq = next(seq for seq, task_id, _, _ in stored if task_id == stale_task)
    with pytest.raises(APIError) as refused:
        headers = {EXPECTED_LAST_SUBJECT_SEQ: str(old_seq)}
        log.nats.call(log.nats.js.publish(f"{log.prefix}.{stale_task}", b"{}", stream=log.stream, headers=headers))
    assert refused.value.err_code in WRONG_LAST_SEQUENCE
    assert log.last_seq() == stored[-1][0]

    print(
        f"\ncluster: {len(stored)} events, {len(landed)} appends returned, {len(failed)} raised "
        f"({sum(markers[m] for m in failed)} of them stored), "
        f"slowest append {max(w.slowest_s for w in writers):.2f} s"
    )
    for w in writers:
        w.log.close()
    follower.close()
    log.close()


def _drain(queue: JetStreamCommandQueue, claimed: list[str], until: int, timeout_s: float) -> None:
    """Claim and ack, as a runner does, until `until` distinct commands are claimed (bounded)."""
    deadline = time.monotonic() + timeout_s
    while len(set(claimed)) < until and time.monotonic() < deadline:
        claim = queue.claim("r1", timeout=2)
        if claim is not None:
            claim.ack()
            claimed.append(claim.command.task_id)


def _lead_consumer_from(cluster: NatsCluster, queue: JetStreamCommandQueue, node: int) -> None:
    """Move the durable's leadership to `node` (a stepdown naming the preferred server: no election
    timeout), so that one kill takes the stream's and the consumer's leaders at once."""
    if cluster.stream_leader(queue.stream, queue.consumer) == node:
        return
    request = json.dumps({"placement": {"preferred": cluster.NAMES[node]}}).encode()
    subject = f"$JS.API.CONSUMER.LEADER.STEPDOWN.{queue.stream}.{queue.consumer}"
    reply = queue.nats.call(queue.nats.nc.request(subject, request, timeout=5))
    assert json.loads(reply.data).get("success"), reply.data
    _until(lambda: cluster.stream_leader(queue.stream, queue.consumer) == node, 10, "the consumer's leader moved")


def test_commands_put_before_the_leader_dies_are_each_claimed_once(healthy: NatsCluster) -> None:
    cluster = healthy
    queue = JetStreamCommandQueue(cluster.url, ack_wait_s=2, replicas=3)
    assert _replicas(queue.nats, queue.stream) == (3, 2)
    consumer = queue.nats.call(queue.nats.js.consumer_info(queue.stream, queue.consumer))
    assert consumer.config.num_replicas in (0, 3, None)  # a durable inherits its stream's replicas
    assert consumer.cluster is not None and len(consumer.cluster.replicas or []) == 2
    ids = [f"c{i}" for i in range(30)]
    for task_id in ids:
        queue.put(Generate(task_id=task_id, params={}))
    claimed: list[str] = []
    _drain(queue, claimed, 5, 10)  # some are done before the failover
    assert claimed == ids[:5]

    # The acks and the delivery state live in the consumer's own Raft group: the node killed leads
    # both it and the stream.
    leader = cluster.stream_leader(queue.stream)
    _lead_consumer_from(cluster, queue, leader)
    cluster.kill(leader)
    late = [f"d{i}" for i in range(3)]  # put during the election: each waits for the new leader
    for task_id in late:
        queue.put(Generate(task_id=task_id, params={}))
    ids += late
    _drain(queue, claimed, len(ids), 30)
    assert sorted(set(claimed)) == sorted(ids)
    cluster.restart(leader)

    # Nothing comes back, not even after the ack wait: every ack held through the failover.
    time.sleep(queue.ack_wait_s + 0.5)
    assert queue.claim("r1", timeout=1.5) is None
    assert [task_id for task_id, n in Counter(claimed).items() if n > 1] == []
    assert queue.pending() == []
    queue.close()


def test_a_blob_written_before_the_failover_reads_back_after(healthy: NatsCluster, tmp_path: Path) -> None:
    cluster = healthy
    blobs = ObjectStoreBlobs(cluster.url, cache_dir=tmp_path / "cache", replicas=3)
    stream = f"OBJ_{blobs.bucket}"
    assert _replicas(blobs.nats, stream) == (3, 2) and _replicas(blobs.nats, f"KV_{blobs.bucket}-names") == (3, 2)
    data = random.Random(7).randbytes(300 * 1024)  # three chunks
    assert blobs.create("outputs/2026-12-03/a.png", data)

    leader = cluster.stream_leader(stream)
    cluster.kill(leader)
    assert blobs.get("outputs/2026-12-03/a.png") == data  # at once: the read waits out the election
    assert cluster.stream_leader(stream) != leader
    cluster.stream_leader(f"KV_{blobs.bucket}-names")  # its names (a stream of their own) have a leader too
    assert not blobs.create("outputs/2026-12-03/a.png", b"other")  # the name is still taken
    cluster.restart(leader)
    path = blobs.local_path("outputs/2026-12-03/a.png")
    assert path is not None and path.read_bytes() == data
    blobs.close()


def test_an_existing_stream_keeps_its_replicas_and_a_warning_says_so(healthy: NatsCluster) -> None:
    first = JetStreamEventLog(healthy.url, stream="RW_EVENTS", prefix="rw.ev", replicas=3)
    with capture_logs() as logs:
        second = JetStreamEventLog(healthy.url, stream="RW_EVENTS", prefix="rw.ev", replicas=1)
    assert [e for e in logs if e["event"] == "nats.replicas_differ"] == [
        {"event": "nats.replicas_differ", "stream": "RW_EVENTS", "replicas": 3, "wanted": 1, "log_level": "warning"}
    ]
    assert _replicas(second.nats, "RW_EVENTS") == (3, 2)
    second.append(TaskQueued(task_id="a", at_ms=0, params={}), expected_version=0)
    assert first.version("a") == 1
    second.close()
    first.close()



def test_an_append_whose_earlier_try_landed_returns_it_instead_of_calling_itself_stale(healthy: NatsCluster) -> None:
    """What a retry meets after a leader change: its first try timed out yet was stored, and the
    version check now sees that event. The same call (same Nats-Msg-Id) gets its seq back."""
    log = JetStreamEventLog(healthy.url, stream="RT_EVENTS", prefix="rt.ev", replicas=3)
    log.append(TaskQueued(task_id="a", at_ms=0, params={}), expected_version=0)
    event = TaskProgress(task_id="a", at_ms=1, percent=10, message="once")
    first = log.nats.call(log._append("rt.ev.a", event, 1, "a:one-call"))
    again = log.nats.call(log._append("rt.ev.a", event, 1, "a:one-call"))  # the retry of that call
    assert again == first and log.version("a") == 2
    with pytest.raises(StaleVersion):  # another call with that expectation is stale
        log.append(TaskProgress(task_id="a", at_ms=2, percent=20, message="late"), expected_version=1)
    log.close()
