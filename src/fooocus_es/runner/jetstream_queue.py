"""`CommandQueue` on a JetStream work queue: runners on any machine pull Generate commands.

One WorkQueue stream, a subject per task (`<prefix>.gen.<pool>.<task_id>`), one durable pull
consumer per pool shared by its runners (fleet.md §2). A runner fetches one command only when it
is idle (a buffered command's ack wait would run out in the client), keeps it with in-progress
acks every ack_wait/3 while it works, acks it once the task's terminal event is stored, and naks
it to hand it back. A runner that dies stops its in-progress acks: after the ack wait another
runner gets the command (delivery count 2) and the log's version check fences the first one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Final

import msgspec
import structlog
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from fooocus_es.fleet.connection import NatsThread, NatsUnavailable, is_token, patiently
from fooocus_es.tasks.commands import COMMAND_DECODER, COMMAND_ENCODER, Generate

FETCH_SLICE_S: Final = 1.0  # a claim waits in pulls this long, so close() is seen within it
UNREACHABLE_PAUSE_S: Final = 0.5  # between pulls while the server is away (no-responders answers at once)

log = structlog.get_logger("fooocus_es.queue")


class JetStreamClaim:
    def __init__(self, command: Generate, msg: Msg, queue: JetStreamCommandQueue) -> None:
        self.command = command
        self.attempt = msg.metadata.num_delivered  # 2 or more: a takeover from a runner that went away
        self._msg = msg
        self._queue = queue
        self._done = False
        self._heartbeat = asyncio.run_coroutine_threadsafe(self._keep_alive(), queue.nats.loop)

    async def _keep_alive(self) -> None:
        """In-progress acks: each one buys a full ack wait, so a long GPU job is not redelivered."""
        while True:
            await asyncio.sleep(self._queue.ack_wait_s / 3)
            with contextlib.suppress(Exception):  # a reconnect: the next beat, or the ack wait, decides
                await self._msg.in_progress()

    def ack(self) -> None:
        self._finish(self._msg.ack_sync)

    def release(self) -> None:
        self._finish(self._nak_sync)

    async def _nak_sync(self) -> None:
        """A NAK the server confirms (nats-py's nak() does not wait), so the next pull sees it redelivered."""
        await self._queue.nats.nc.request(self._msg.reply, b"-NAK", timeout=2)

    def _finish(self, answer: object) -> None:
        if self._done:
            return
        self._done = True
        self._heartbeat.cancel()
        with contextlib.suppress(Exception):  # a lost ack or nak: the ack wait hands the command on
            self._queue.nats.call(answer())  # type: ignore[operator]


class JetStreamCommandQueue:
    def __init__(
        self,
        url: str,
        *,
        stream: str = "FES_CMDS",
        prefix: str = "fes.cmd",
        pool: str = "default",
        ack_wait_s: float = 30.0,
        max_deliver: int = 3,
        replicas: int = 1,
    ) -> None:
        if not is_token(pool):
            raise ValueError(f"pool: {pool!r} must be one NATS subject token")
        self.stream = stream
        self.prefix = prefix
        self.pool = pool
        self.ack_wait_s = ack_wait_s
        self.max_deliver = max_deliver
        self.replicas = replicas  # the stream's; its durable consumer inherits them
        self.consumer = f"gen-{pool}-v1"  # versioned: nats never reconciles a durable's config
        self.nats = NatsThread(url, name=f"nats-{stream.lower()}")
        self._closed = False
        self._sub: JetStreamContext.PullSubscription = self.nats.call(self._setup())

    def _subject(self, task_id: str) -> str:
        if not is_token(task_id):
            raise ValueError(f"task_id: {task_id!r} must be one NATS subject token")
        return f"{self.prefix}.gen.{self.pool}.{task_id}"

    async def _setup(self) -> JetStreamContext.PullSubscription:
        js = self.nats.js
        config = api.StreamConfig(
            name=self.stream,
            subjects=[f"{self.prefix}.>"],
            retention=api.RetentionPolicy.WORK_QUEUE,  # a command is gone once acked
            storage=api.StorageType.FILE,
            duplicate_window=600,
            num_replicas=self.replicas,
        )
        await self.nats.ensure_stream(config)
        consumer = api.ConsumerConfig(
            durable_name=self.consumer,
            filter_subject=f"{self.prefix}.gen.{self.pool}.>",
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s,
            max_deliver=self.max_deliver,
            deliver_policy=api.DeliverPolicy.ALL,
        )
        return await js.pull_subscribe(
            consumer.filter_subject or "", durable=self.consumer, stream=self.stream, config=consumer
        )

    def put(self, command: Generate) -> None:
        headers = {api.Header.MSG_ID.value: command.task_id}  # a second put of one task is a duplicate
        subject, payload = self._subject(command.task_id), COMMAND_ENCODER.encode(command)
        # Retried through a leader change (the same id makes it one command): a put comes right after
        # the task's TaskQueued is stored, and failing it would answer an error for a task that the
        # sweep queues and runs anyway.
        self.nats.call(patiently(lambda: self.nats.js.publish(subject, payload, headers=headers)))

    def claim(self, runner_id: str, timeout: float | None = None) -> JetStreamClaim | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed:
            left = FETCH_SLICE_S if deadline is None else min(FETCH_SLICE_S, deadline - time.monotonic())
            if left <= 0:
                return None
            try:
                messages = self.nats.call(self._sub.fetch(1, timeout=max(left, 0.01)))
            except NatsUnavailable as exc:
                if not isinstance(exc.__cause__, NatsTimeout):  # not an empty queue: the server is away
                    log.warning("queue.unreachable", error=str(exc))
                    time.sleep(UNREACHABLE_PAUSE_S)
                continue
            except ConnectionClosedError:
                return None
            if messages:
                msg = messages[0]
                try:
                    command = COMMAND_DECODER.decode(msg.data)
                except msgspec.DecodeError:
                    command = None
                if not isinstance(command, Generate):  # only Generate travels on this queue
                    log.error("queue.bad_command", subject=msg.subject)
                    with contextlib.suppress(NatsUnavailable):
                        self.nats.call(msg.term())
                    continue
                return JetStreamClaim(command, msg, self)
        return None

    def wake(self) -> None:
        """Nothing: a fetch is not interrupted; a claim sees the shutdown after its fetch slice."""

    def cancel(self, task_id: str) -> bool:
        """Delete the command if no runner has been handed it yet.

        A command the consumer has delivered (claimed, or waiting for redelivery) stays: the log's
        version check decides a cancel racing a start, and a redelivered command of a cancelled
        task is acked at once by its runner.
        """
        return self.nats.call(self._cancel(self._subject(task_id)))

    async def _cancel(self, subject: str) -> bool:
        js = self.nats.js
        try:
            seq = int((await js.get_last_msg(self.stream, subject)).seq or 0)
        except NotFoundError:
            return False
        delivered = (await js.consumer_info(self.stream, self.consumer)).delivered.stream_seq or 0
        if seq <= delivered:
            return False
        try:
            return await js.delete_msg(self.stream, seq)
        except NotFoundError:
            return False

    def pending(self) -> list[str]:
        """Task ids not yet handed to a runner, in queue order."""
        return self.nats.call(self._pending())

    async def _pending(self) -> list[str]:
        js = self.nats.js
        seq = ((await js.consumer_info(self.stream, self.consumer)).delivered.stream_seq or 0) + 1
        found: list[str] = []
        while True:
            try:
                msg = await js.get_msg(self.stream, seq=seq, subject=f"{self.prefix}.gen.{self.pool}.>", next=True)
            except NotFoundError:
                return found
            found.append(msg.subject.rsplit(".", 1)[-1])
            seq = int(msg.seq or seq) + 1

    def close(self) -> None:
        self._closed = True
        self.nats.close()
