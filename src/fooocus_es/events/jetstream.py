"""`EventLog` on NATS JetStream: one stream, one subject per task (fleet.md §2, §6).

The stream's seq is the log's seq (one total order across tasks). A task's version is carried in
a `Fes-Version` header, and every append names the task subject's last stream seq in
`Nats-Expected-Last-Subject-Sequence`: of two writers that read the same state, the server takes
exactly one (the only per-task compare-and-set JetStream has on 2.9). Each append also carries a
`Nats-Msg-Id` unique to that call, so a retry after a lost ack is a duplicate, never a second event.
Previews never enter the stream; followers in the writing process get them attached, as with SQLite.
"""

from __future__ import annotations

import contextlib
import queue
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from typing import Final

import anyio.to_thread
import msgspec
from nats.aio.msg import Msg
from nats.js import api
from nats.js.errors import APIError, NotFoundError

from fooocus_es.events.log import AppendRefused, StaleVersion, TaskAlreadyEnded
from fooocus_es.events.types import (
    EVENT_ENCODER,
    TERMINAL_TYPES,
    Envelope,
    Event,
    TaskProgress,
    decode_event,
    encode_for_log,
    event_type,
)
from fooocus_es.fleet.connection import NatsThread, is_token, patiently

PAGE: Final = 1000
KEPT_PREVIEWS: Final = 256
MSG_ID: Final = api.Header.MSG_ID.value
EXPECTED_LAST_SUBJECT_SEQ: Final = api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value
VERSION_HEADER: Final = "Fes-Version"
TYPE_HEADER: Final = "Fes-Event"
# "Wrong last sequence": 10071 (JSStreamWrongLastSequenceErrF) from a single server, and 10164
# (JSStreamWrongLastSequenceConstantErr) from a replicated stream's leader while another append to
# the subject is still in its Raft proposal. Both mean another writer got there first.
WRONG_LAST_SEQUENCE: Final = frozenset({10071, 10164})


class _Last(msgspec.Struct, frozen=True):
    seq: int  # the task subject's last stream seq (0: none)
    version: int
    type: str | None
    msg_id: str | None = None  # its Nats-Msg-Id: an append finds its own event from an earlier try


class JetStreamEventLog:
    def __init__(
        self, url: str, *, stream: str = "FES_EVENTS", prefix: str = "fes.ev", poll_s: float = 0.25, replicas: int = 1
    ) -> None:
        self.stream = stream
        self.replicas = replicas  # of the stream, when this node creates it (3 on a 3-node cluster)
        self.prefix = prefix
        self.poll_s = poll_s
        self.nats = NatsThread(url, name=f"nats-{stream.lower()}")
        self._previews: OrderedDict[str, str] = OrderedDict()  # Nats-Msg-Id -> preview
        # Previews travel beside the stream on core NATS (at most once, never stored), keyed by the
        # event's Nats-Msg-Id, so a follower on any node attaches them to their TaskProgress.
        base = prefix.rsplit(".", 1)[0] if "." in prefix else f"{prefix}-"
        self.preview_subject = f"{base}.pv"
        self.progress_subject = f"{base}.pg"  # announced progress: live only (fleet.md §2)
        self._closed = False
        self.nats.call(self._ensure_stream())
        self.nats.call(self.nats.nc.subscribe(f"{self.preview_subject}.*", cb=self._on_preview))

    async def _on_preview(self, msg: Msg) -> None:
        msg_id = (msg.headers or {}).get(MSG_ID)
        if msg_id:
            self._keep_preview(msg_id, msg.data.decode())

    def _keep_preview(self, msg_id: str, preview: str) -> None:
        self._previews[msg_id] = preview
        while len(self._previews) > KEPT_PREVIEWS:
            self._previews.popitem(last=False)

    async def _ensure_stream(self) -> None:
        config = api.StreamConfig(
            name=self.stream,
            subjects=[f"{self.prefix}.>"],
            retention=api.RetentionPolicy.LIMITS,  # the log keeps everything (a rebuild replays it all)
            storage=api.StorageType.FILE,
            allow_direct=True,
            duplicate_window=600,  # seconds: covers a writer's retries across a server restart
            num_replicas=self.replicas,
        )
        await self.nats.ensure_stream(config)

    def _subject(self, task_id: str) -> str:
        if not is_token(task_id):
            raise AppendRefused(task_id, "a task id must be one NATS subject token (no '.', '*', '>' or spaces)")
        return f"{self.prefix}.{task_id}"

    # -- writing --------------------------------------------------------------------------------
    def append(self, event: Event, expected_version: int | None = None) -> int:
        subject = self._subject(event.task_id)
        msg_id = f"{event.task_id}:{uuid.uuid4().hex}"  # this call's id: its retries are duplicates
        preview = event.preview if isinstance(event, TaskProgress) else None
        return self.nats.call(self._append(subject, event, expected_version, msg_id, preview))

    async def _append(
        self, subject: str, event: Event, expected_version: int | None, msg_id: str, preview: str | None = None
    ) -> int:
        payload = encode_for_log(event)
        if preview is not None:  # before the event, so followers (here and elsewhere) have it first
            self._keep_preview(msg_id, preview)
            with contextlib.suppress(Exception):  # a preview is droppable; the event is not
                await self.nats.nc.publish(
                    f"{self.preview_subject}.{event.task_id}", preview.encode(), headers={MSG_ID: msg_id}
                )
        while True:
            last = await self._read_last(subject)
            if last.msg_id == msg_id:  # an earlier try of this call landed (its answer was lost)
                return last.seq
            if last.type in TERMINAL_TYPES:
                raise TaskAlreadyEnded(event.task_id, last.version)
            if expected_version is not None and expected_version != last.version:
                raise StaleVersion(event.task_id, expected_version, last.version)
            headers = {
                MSG_ID: msg_id,
                EXPECTED_LAST_SUBJECT_SEQ: str(last.seq),
                VERSION_HEADER: str(last.version + 1),
                TYPE_HEADER: event_type(event),
            }
            try:
                return (await self._publish(subject, payload, headers)).seq
            except APIError as exc:
                if exc.err_code not in WRONG_LAST_SEQUENCE:
                    raise
            # Another writer appended between our read and our write; or, across a leader change, an
            # earlier try of ours that timed out landed after all and the retry's check saw it
            # before dedup did. Ours is then the last event: the append succeeded, it is not stale.
            if expected_version is not None:
                now = await self._read_last(subject)
                if now.msg_id == msg_id:
                    return now.seq
                if now.type in TERMINAL_TYPES:
                    raise TaskAlreadyEnded(event.task_id, now.version)
                raise StaleVersion(event.task_id, expected_version, now.version)
            # No expectation: read the new state and try again (the terminal guard still applies).

    async def _publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> api.PubAck:
        """Publish, retrying a lost ack, a reconnect or a leader change with the same Nats-Msg-Id
        (dedup makes it one). js.publish turns no-responders into NoStreamResponseError, which the
        retry here once missed (catching only NoRespondersError), so one blip failed the append."""
        return await patiently(lambda: self.nats.js.publish(subject, payload, stream=self.stream, headers=headers))

    async def _read_last(self, subject: str) -> _Last:
        """`_last` for an append: a stream between leaders does not answer for a few seconds, and a
        read is safe to repeat (a failover need not fail the append, fleet.md §6 trap 2)."""
        return await patiently(lambda: self._last(subject))

    async def _last(self, subject: str) -> _Last:
        try:
            # Not a direct get: on a cluster that could be served by a lagging follower.
            msg = await self.nats.js.get_last_msg(self.stream, subject)
        except NotFoundError:
            return _Last(0, 0, None)
        headers = msg.headers or {}
        return _Last(
            int(msg.seq or 0), int(headers.get(VERSION_HEADER, 0)), headers.get(TYPE_HEADER), headers.get(MSG_ID)
        )

    # -- reading --------------------------------------------------------------------------------
    def version(self, task_id: str) -> int:
        return self.nats.call(self._last(self._subject(task_id))).version

    def last_seq(self) -> int:
        return self.nats.call(self._stream_last_seq())

    async def _stream_last_seq(self) -> int:
        return int((await self.nats.js.stream_info(self.stream)).state.last_seq)

    def read(self, *, after_seq: int = 0, task_id: str | None = None) -> Iterator[Envelope]:
        """What is stored now after `after_seq`, in pages (one short-lived ordered consumer each)."""
        subject = self._subject(task_id) if task_id is not None else f"{self.prefix}.>"
        end = self.nats.call(self._last(subject)).seq if task_id is not None else self.last_seq()
        last = after_seq
        while last < end and (page := self.nats.call(self._page(subject, last, end))):
            yield from page
            last = page[-1].seq

    async def _page(self, subject: str, after_seq: int, end: int) -> list[Envelope]:
        config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after_seq + 1)
        sub = await self.nats.js.subscribe(subject, stream=self.stream, ordered_consumer=True, config=config)
        page: list[Envelope] = []
        try:
            while len(page) < PAGE:
                msg = await sub.next_msg(timeout=self.nats.timeout_s)
                seq = msg.metadata.sequence.stream
                if seq > end:
                    break
                page.append(Envelope(seq, decode_event(msg.data)))
                if seq >= end or msg.metadata.num_pending == 0:
                    break
        finally:
            await sub.unsubscribe()
        return page

    def announce(self, event: TaskProgress) -> None:
        """LiveChannel: progress (its preview inline) to every tail, at most once, never stored."""
        subject = f"{self.progress_subject}.{self._subject(event.task_id).rsplit('.', 1)[1]}"
        self.nats.call(self.nats.nc.publish(subject, EVENT_ENCODER.encode(event)))

    async def tail(self, from_seq: int) -> AsyncIterator[list[Envelope]]:
        inbox: queue.SimpleQueue[Envelope] = queue.SimpleQueue()
        last = [from_seq]  # the last stored seq delivered: announced events ride under it

        async def deliver(msg: Msg) -> None:  # on the nats loop, in stream order
            event = decode_event(msg.data)
            preview = self._previews.get((msg.headers or {}).get(MSG_ID, ""))
            if preview is not None and isinstance(event, TaskProgress):
                event = msgspec.structs.replace(event, preview=preview)
            last[0] = msg.metadata.sequence.stream
            inbox.put(Envelope(last[0], event))

        async def announced(msg: Msg) -> None:
            with contextlib.suppress(ValueError):  # not an event: ignored
                event = decode_event(msg.data)
                if isinstance(event, TaskProgress):
                    inbox.put(Envelope(last[0], event))

        async def follow() -> object:
            config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=from_seq + 1)
            return await self.nats.js.subscribe(
                f"{self.prefix}.>",
                stream=self.stream,
                ordered_consumer=True,
                config=config,
                cb=deliver,
                idle_heartbeat=1.0,  # two missed beats re-create it at last+1: a server restart costs ~2 s
            )

        sub = await anyio.to_thread.run_sync(self.nats.call, follow())
        live = await anyio.to_thread.run_sync(
            self.nats.call, self.nats.nc.subscribe(f"{self.progress_subject}.*", cb=announced)
        )
        try:
            while not self._closed:
                batch = await anyio.to_thread.run_sync(self._drain, inbox, abandon_on_cancel=True)
                if batch:
                    yield batch
        finally:
            if not self.nats.loop.is_closed():  # not awaited: a cancelled generator cannot wait
                for subscription in (sub, live):
                    self.nats.loop.call_soon_threadsafe(
                        lambda s=subscription: self.nats.loop.create_task(s.unsubscribe())  # type: ignore[attr-defined]
                    )

    def _drain(self, inbox: queue.SimpleQueue[Envelope]) -> list[Envelope]:
        """Worker thread: what has arrived, waiting up to poll_s for the first one."""
        try:
            batch = [inbox.get(timeout=self.poll_s)]
        except queue.Empty:
            return []
        while len(batch) < PAGE:
            try:
                batch.append(inbox.get_nowait())
            except queue.Empty:
                break
        return batch

    def close(self) -> None:
        self._closed = True
        self.nats.close()
