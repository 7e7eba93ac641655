"""Which runners a fleet has and what they do: each runner puts its state in the KV bucket
`fes-runners` every few seconds; `GET /runners` lists the entries (stale ones marked, fleet.md §6:
KV expiry is invisible on 2.9 servers, so staleness is read from the entry's own time)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Final, Literal

import msgspec
from nats.js import api
from nats.js.errors import NoKeysError
from nats.js.kv import KeyValue

from fooocus_es.engine.models.catalog import names_on_disk
from fooocus_es.events.types import now_ms
from fooocus_es.fleet.connection import NatsThread

BUCKET: Final = "fes-runners"
BEAT_S: Final = 5.0
CHANGE_S: Final = 0.5  # how soon a task starting or ending shows in /runners
STALE_AFTER_MS: Final = int(3 * BEAT_S * 1000)
_NOT_IN_KEY: Final = re.compile(r"[^-_=a-zA-Z0-9]")


class RunnerInfo(msgspec.Struct, kw_only=True):
    runner_id: str
    pool: str
    host: str
    device: str
    state: Literal["idle", "busy", "stale", "stopped"]
    task_id: str | None = None
    model: str | None = None
    seen_ms: int = 0
    # The model files on the runner's disk: what an API node, which holds none, admits requests for.
    checkpoints: list[str] = []
    loras: list[str] = []
    vaes: list[str] = []


async def _bucket(nats: NatsThread, bucket: str, replicas: int) -> KeyValue:
    config = api.KeyValueConfig(bucket=bucket, history=1, storage=api.StorageType.MEMORY, ttl=86400, replicas=replicas)
    return await nats.key_value(config)


class PresenceBeat:
    """Runner side: `state()` is read every CHANGE_S on the NATS loop (it must be cheap and
    thread-safe); the model files in `models_dir` are listed off the loop, once a beat."""

    def __init__(
        self,
        nats: NatsThread,
        state: Callable[[], RunnerInfo],
        models_dir: Path,
        bucket: str = BUCKET,
        *,
        replicas: int = 1,
    ) -> None:
        self.nats = nats
        self.state = state
        self.models_dir = models_dir
        self.bucket = bucket
        self.replicas = replicas
        self._task: Future[None] | None = None

    def start(self) -> None:
        self._task = asyncio.run_coroutine_threadsafe(self._beat(), self.nats.loop)

    async def _beat(self) -> None:
        """Every BEAT_S, and within CHANGE_S of a change (a task started or ended)."""
        kv = await _bucket(self.nats, self.bucket, self.replicas)
        said: RunnerInfo | None = None
        said_at = 0.0
        while True:
            info = self.state()
            beat_due = time.monotonic() - said_at >= BEAT_S
            if said is None or info != said or beat_due:
                if said is None or beat_due:  # the folders are listed once a beat, in a thread
                    listed = await asyncio.to_thread(with_model_files, info, self.models_dir)
                files = {"checkpoints": listed.checkpoints, "loras": listed.loras, "vaes": listed.vaes}
                said, said_at = info, time.monotonic()
                beat = msgspec.structs.replace(info, seen_ms=now_ms(), **files)
                with contextlib.suppress(Exception):  # a reconnect: the next beat says it again
                    await kv.put(_key(info.runner_id), msgspec.json.encode(beat))
            await asyncio.sleep(CHANGE_S)

    def stop(self, final: RunnerInfo | None = None) -> None:
        if self._task is not None:
            self._task.cancel()
        if final is not None and not self.nats.closed:

            async def last() -> None:
                kv = await _bucket(self.nats, self.bucket, self.replicas)
                final.seen_ms = now_ms()
                await kv.put(_key(final.runner_id), msgspec.json.encode(final))

            with contextlib.suppress(Exception):
                self.nats.call(last(), timeout_s=5)


class FleetRunners:
    """API side: every runner that has beaten, newest state first per runner."""

    def __init__(self, nats: NatsThread, bucket: str = BUCKET, *, replicas: int = 1) -> None:
        self.nats = nats
        self.bucket = bucket
        self.replicas = replicas
        self._cached: tuple[float, list[RunnerInfo]] = (0.0, [])

    def recent(self, max_age_s: float = 2.0) -> list[RunnerInfo]:
        """Worker thread: the list, at most `max_age_s` old (admission asks on every request)."""
        at, found = self._cached
        if time.monotonic() - at > max_age_s:
            found = self.nats.call(self._list())
            self._cached = (time.monotonic(), found)
        return found

    def model_names(self) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
        """Checkpoints, LoRAs and VAEs on the disks of the runners that are alive."""
        alive = [info for info in self.recent() if info.state in ("idle", "busy")]
        return (
            frozenset(name for info in alive for name in info.checkpoints),
            frozenset(name for info in alive for name in info.loras),
            frozenset(name for info in alive for name in info.vaes),
        )

    async def list(self) -> list[RunnerInfo]:
        return await self.nats.run(self._list())

    async def _list(self) -> list[RunnerInfo]:
        # Opened on every listing: the bucket is in memory, so a restarted server has lost it and
        # this makes it again (a KeyValue kept from before would answer "stream not found").
        kv = await _bucket(self.nats, self.bucket, self.replicas)
        try:
            keys = await kv.keys()
        except NoKeysError:
            return []
        found = []
        for key in keys:
            entry = await kv.get(key)
            if not entry.value:
                continue
            info = msgspec.json.decode(entry.value, type=RunnerInfo)
            if info.state != "stopped" and now_ms() - info.seen_ms > STALE_AFTER_MS:
                info.state = "stale"
            found.append(info)
        return sorted(found, key=lambda info: info.runner_id)


def _key(runner_id: str) -> str:
    return _NOT_IN_KEY.sub("_", runner_id)


def runner_info(runner_id: str, pool: str, device: str, task_id: str | None, model: str | None) -> RunnerInfo:
    """A runner's state (no I/O: read on the NATS loop twice a second)."""
    return RunnerInfo(
        runner_id=runner_id, pool=pool, host=socket.gethostname(), device=device,
        state="busy" if task_id else "idle", task_id=task_id, model=model,
    )  # fmt: skip


def with_model_files(info: RunnerInfo, models_dir: Path) -> RunnerInfo:
    """`info` with the model files on the runner's disk (three folder listings: a worker thread)."""
    return msgspec.structs.replace(
        info, checkpoints=names_on_disk(models_dir, "checkpoints"), loras=names_on_disk(models_dir, "loras"),
        vaes=names_on_disk(models_dir, "vae"),
    )  # fmt: skip
