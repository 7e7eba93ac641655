"""One NATS connection on a private asyncio loop thread, callable from any other thread.

nats-py is asyncio-only and its objects belong to the loop that made them, while the EventLog
interface is called synchronously from the runner's thread, request worker threads and tests. So
each backend owns a loop thread and hands coroutines to it; the GPU thread never touches nats-py
itself (fleet.md §1).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final, TypeVar

import nats
import structlog
from nats.aio.client import Client
from nats.errors import (
    ConnectionClosedError,
    ConnectionReconnectingError,
    NoRespondersError,
    OutboundBufferLimitError,
    StaleConnectionError,
    UnexpectedEOF,
)
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, BucketNotFoundError, NoStreamResponseError, ServiceUnavailableError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

T = TypeVar("T")
log = structlog.get_logger("fooocus_es.nats")

STREAM_NAME_IN_USE: Final = 10058  # JetStream's error code: a stream of that name, another configuration
_NOT_IN_TOKEN: Final = frozenset(".*> \t\r\n")


# What a server that is down, restarting or still recovering JetStream answers (nats-py's TimeoutError
# is a TimeoutError too): the same call later can work.
_UNANSWERED: Final = (
    TimeoutError,
    NoRespondersError,
    ConnectionReconnectingError,
    OutboundBufferLimitError,
    StaleConnectionError,
    UnexpectedEOF,
    ServiceUnavailableError,
    NoStreamResponseError,
)


# Answers to an idempotent call (a read, or a publish carrying a Nats-Msg-Id) that mean "not now":
# nobody answered (a server restarting, a replicated stream between leaders: an R3 election takes
# 4-9 s), or a replicated stream's leader has this Nats-Msg-Id staged for a proposal not committed
# yet (an earlier try of the same publish, which may yet land).
_NOT_NOW: Final = (TimeoutError, NoRespondersError, NoStreamResponseError, ServiceUnavailableError)
MSG_ID_IN_PROCESS: Final = 10158  # JSStreamDuplicateMessageConflict
# How long a call keeps asking: past an election (4-9 s) with room to spare, and a try started
# before it ends still returns (nats-py's 5 s timeout) within NatsThread.call's 30 s.
PATIENT_S: Final = 24.0


async def patiently(make: Callable[[], Awaitable[T]], *, within_s: float = PATIENT_S) -> T:
    """On the loop: `make()` again while JetStream says "not now", for up to `within_s`. By time,
    not by count: a stream without a leader can answer no-responders at once, or time out after 5 s.
    Only for calls that are safe to repeat."""
    deadline = asyncio.get_running_loop().time() + within_s
    attempt = 0
    while True:
        try:
            return await make()
        except _NOT_NOW as exc:
            error: Exception = exc
        except APIError as exc:
            if exc.err_code != MSG_ID_IN_PROCESS:
                raise
            error = exc
        attempt += 1
        pause = min(0.2 * attempt, 1.0)
        if asyncio.get_running_loop().time() + pause >= deadline:
            raise error
        await asyncio.sleep(pause)


class NatsUnavailable(ConnectionError):
    """The NATS server did not answer: down, restarting, or JetStream not ready yet. A storage fault
    of kind "unreachable" (ops.storage.classify): worth waiting out, unlike a refusal or a bug."""


def is_token(value: str) -> bool:
    """Whether `value` can be one NATS subject token (task ids and pool names are)."""
    return bool(value) and not _NOT_IN_TOKEN & set(value)


class NatsThread:
    def __init__(self, url: str, *, name: str = "nats", timeout_s: float = 5.0) -> None:
        self.url = url
        self.name = name
        self.timeout_s = timeout_s
        self.loop = asyncio.new_event_loop()
        self.closed = False
        self._away = False  # reconnecting: errors until then are the same outage
        self._closing = threading.Lock()
        self._replicas_said: set[str] = set()  # streams whose replica mismatch was logged (on the loop)
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()
        # Reconnect for ever: nats-py's default gives up after 60 tries (a restarted server must
        # find every API node and runner again, fleet.md §5.3).
        # A cluster's seeds, comma-separated (nats://a:4222,nats://b:4222): a node starting while one
        # server is down still connects; the others are learned from the server once connected.
        servers = [part.strip() for part in url.split(",") if part.strip()]
        self.nc: Client = self.call(
            nats.connect(
                servers, max_reconnect_attempts=-1, reconnect_time_wait=0.5, name=name, error_cb=self._on_error,
                disconnected_cb=self._on_disconnected, reconnected_cb=self._on_reconnected,
            ),
            timeout_s=30,
        )  # fmt: skip
        self.js: JetStreamContext = self.nc.jetstream(timeout=timeout_s)

    # nats-py's default callbacks print a traceback for every failed reconnect (two a second while
    # the server is away): one line when the connection goes, the first error, one when it is back.
    async def _on_error(self, exc: Exception) -> None:
        if not self.closed and not self._away:
            self._away = True
            log.warning("nats.error", connection=self.name, error=f"{type(exc).__name__}: {exc}")

    async def _on_disconnected(self) -> None:
        if not self.closed:
            log.warning("nats.disconnected", connection=self.name, url=self.url)

    async def _on_reconnected(self) -> None:
        self._away = False
        log.info("nats.reconnected", connection=self.name, url=self.url)

    def call(self, coro: Coroutine[Any, Any, T], *, timeout_s: float | None = None) -> T:
        """Run `coro` on the loop thread and wait for its result (never call from that thread)."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("NatsThread.call from its own loop thread would deadlock")
        if self.closed:
            coro.close()
            raise ConnectionClosedError
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        wait_s = timeout_s if timeout_s is not None else self.timeout_s * 6
        try:
            return future.result(timeout=wait_s)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()  # a call given up on must not still land later (or hold the loop)
            raise NatsUnavailable(f"nats: no answer from {self.url} ({exc or 'timeout'})") from exc
        except _UNANSWERED as exc:
            raise NatsUnavailable(f"nats: {type(exc).__name__} from {self.url} ({exc})") from exc

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """From another event loop (the app's): await `coro` run on this connection's loop."""
        try:
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))
        except _UNANSWERED as exc:
            raise NatsUnavailable(f"nats: {type(exc).__name__} from {self.url} ({exc})") from exc

    async def ensure_stream(self, config: api.StreamConfig) -> None:
        """On this loop: create the stream, or accept the one another node made with the same subjects."""
        try:
            await self.js.add_stream(config)
        except APIError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                raise
            info = await self.js.stream_info(config.name or "")
            if info.config.subjects != config.subjects:
                raise RuntimeError(f"stream {config.name} exists with subjects {info.config.subjects}") from exc
            self._check_replicas(info, config.num_replicas)

    def _check_replicas(self, info: api.StreamInfo, wanted: int | None) -> None:
        """An existing stream keeps its replica count: changing it is an operator's step (`nats stream
        edit --replicas`, while the cluster is healthy), never a side effect of a node starting with
        another --replicas. So a mismatch is said (once per stream and connection: buckets are
        opened again and again), not fixed and not fatal."""
        have, name = info.config.num_replicas or 1, info.config.name or ""
        if have != (wanted or 1) and name not in self._replicas_said:
            self._replicas_said.add(name)
            log.warning("nats.replicas_differ", stream=name, replicas=have, wanted=wanted or 1)

    async def key_value(self, config: api.KeyValueConfig) -> KeyValue:
        """On this loop: the KV bucket, created with `config` by whichever node comes first."""
        bucket = config.bucket or ""
        try:
            kv = await self.js.key_value(bucket)
        except BucketNotFoundError:
            return await self.js.create_key_value(config=config)
        self._check_replicas(await self.js.stream_info(f"KV_{bucket}"), config.replicas)
        return kv

    async def object_store(self, config: api.ObjectStoreConfig) -> ObjectStore:
        """On this loop: the object store bucket, created with `config` by whichever node comes first."""
        bucket = config.bucket or ""
        try:
            objects = await self.js.object_store(bucket)
        except BucketNotFoundError:
            return await self.js.create_object_store(bucket, config=config)
        self._check_replicas(await self.js.stream_info(f"OBJ_{bucket}"), config.replicas)
        return objects

    def close(self) -> None:
        with self._closing:  # idempotent, and a second caller waits for the first to finish
            if self.closed:
                return
            self.closed = True
            self._close()

    def _close(self) -> None:
        with contextlib.suppress(Exception):  # closing: a dead server must not keep us from stopping
            asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    async def _shutdown(self) -> None:
        """Close the connection, then end whatever still runs on the loop (subscriptions, heartbeats)."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.nc.close(), timeout=5)
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
