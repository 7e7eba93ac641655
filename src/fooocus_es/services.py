"""The server's parts, built from Settings and wired on the event loop by the app's lifespan."""

from __future__ import annotations

import threading
import time
from functools import partial
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread
import msgspec
import structlog
from anyio.abc import TaskGroup

from fooocus_es.api.queue_bound import QueueBound
from fooocus_es.api.urls import UrlSigner
from fooocus_es.engine.models.catalog import InstalledNames, ModelCatalog
from fooocus_es.engine.models.downloads import ModelDownloads
from fooocus_es.engine.planning import presets
from fooocus_es.engine.planning.styles import StyleBook
from fooocus_es.events.bus import Bus
from fooocus_es.events.follower import LogFollower
from fooocus_es.events.log import AppendRefused
from fooocus_es.events.store import EventStore
from fooocus_es.events.types import TaskCancelled, now_ms
from fooocus_es.fleet.backends import open_backends
from fooocus_es.fleet.control import NatsControl
from fooocus_es.fleet.presence import FleetRunners, RunnerInfo, with_model_files
from fooocus_es.fleet.webhook_claims import WebhookClaims
from fooocus_es.media.conversions import ConversionCache
from fooocus_es.media.limits import DecodeBudget
from fooocus_es.ops.storage import StorageHealth
from fooocus_es.projections.live import LiveTasks
from fooocus_es.projections.records import open_read_model
from fooocus_es.runner.devices import DeviceRunners, EngineFactory, device_names, make_model_store
from fooocus_es.runner.queue import LocalCommandQueue
from fooocus_es.runner.recovery import recover
from fooocus_es.settings import Settings
from fooocus_es.subscribers.waiters import Waiters
from fooocus_es.subscribers.webhook_outbox import WebhookOutbox
from fooocus_es.subscribers.webhooks import BodyShaper, WebhookSender, record_as_body
from fooocus_es.tasks.commands import Generate, Skip, Stop

log = structlog.get_logger("fooocus_es")

# How stale the model and style names admission checks against may be (a file added just now is
# seen within this time; the runner's own checks see it at once).
NAMES_TTL_S = 1.0


def resolve_device(requested: str) -> str:
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Services:
    def __init__(self, settings: Settings, *, engine_factory: EngineFactory | None = None) -> None:
        self.settings = settings
        for folder in (settings.outputs_dir, settings.inputs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        # An API node of a fleet (--no-runner) never imports torch: it has no device of its own.
        names = device_names(settings)
        self.devices = [resolve_device(name) for name in names] if settings.runner else ["none"]
        self.device = self.devices[0] if len(set(self.devices)) == 1 else ",".join(self.devices)
        # SQLite and local files on one machine; JetStream's log, work queue and object store in a
        # fleet. The read model is this node's own SQLite either way, fed from the log, unless
        # --read-model names a PostgreSQL database that the fleet's API nodes share.
        self.backends = open_backends(settings)
        self.blobs = self.backends.blobs  # inputs/ and outputs/
        self.conversions = ConversionCache()  # Accept conversions of stored files (media/conversions.py)
        self.event_log = self.backends.event_log
        busy = settings.db_busy_timeout_s
        self.read_model = open_read_model(settings.read_model_url, settings.db_path, busy_timeout_s=busy)
        self.webhook_outbox = WebhookOutbox(settings.db_path, busy_timeout_s=busy)
        check_log = getattr(self.event_log, "check_writable", None) or (lambda: None)  # SQLite's write lock
        self.storage = StorageHealth({"outputs": settings.outputs_dir, "inputs": settings.inputs_dir}, check_log)
        self.bus = Bus()
        self.follower = LogFollower(self.event_log, self.bus, self.read_model, storage=self.storage)
        self.store = EventStore(self.event_log, self.follower)
        self.commands = self.backends.commands
        # The queue bound counts the commands waiting where that is a local read, else the live view
        # (a fleet's queue is a network call away, and the loop must not block on it).
        local = self.commands if isinstance(self.commands, LocalCommandQueue) else None
        waiting = (lambda: len(local.pending())) if local is not None else (lambda: self.live.depth)
        self.queue_bound = QueueBound(settings.queue_size, waiting)
        self.decode_budget = DecodeBudget(
            concurrent=settings.max_concurrent_decodes,
            max_request_pixels=int(settings.max_request_megapixels * 1_000_000),
        )
        self._names: tuple[float, InstalledNames] | None = None  # installed_names_now's cache
        self._image_threads: anyio.CapacityLimiter | None = None  # made on the loop, at first use
        nats = self.backends.nats
        self.remote_control = NatsControl(nats) if nats is not None else None  # stop/skip on other machines
        self.live = LiveTasks()
        self.waiters = Waiters()
        self.signer = UrlSigner(settings.public_base_url, settings.api_key)
        self.style_book = StyleBook(settings.data_dir)
        self.preset = presets.load_preset(settings.preset, settings.data_dir)
        self.preset_defaults = presets.preset_request_defaults(self.preset)
        if engine_factory is None and settings.runner:
            # Imported here, on one thread: diffusers' lazy imports are not thread-safe, and the
            # runner's warm-up and request threads would otherwise race into them.
            from fooocus_es.engine.diffusion.pipeline import Engine

            engine_factory = partial(Engine, max_batch=settings.max_batch)
        self.model_store = make_model_store(settings, self.devices[0])  # the first runner's; its file side for all
        self.catalog = ModelCatalog(settings.models_dir, settings.data_dir)
        self.downloads = ModelDownloads(self.catalog, self.model_store.download)
        self.runners = DeviceRunners(
            settings, self.devices if settings.runner else [], store=self.store, commands=self.commands,
            blobs=self.blobs, engine_factory=engine_factory, style_book=self.style_book,
            fetch_models=self.downloads.fetch_for_plan, warm_model=self.preset_defaults.get("base_model_name"),
            nats=nats if settings.runner else None, storage=self.storage, model_stores=[self.model_store],
        )  # fmt: skip
        self.webhook_claims = (
            WebhookClaims(nats, settings.data_dir, replicas=settings.replicas) if nats is not None else None
        )
        self.fleet_runners = FleetRunners(nats, replicas=settings.replicas) if nats is not None else None
        self.bus.add_listener(self.live.apply)
        self.bus.add_listener(self.waiters.apply)
        # What a webhook POSTs; the app sets it so each wire's tasks get that wire's body.
        self.webhook_body: BodyShaper = record_as_body

    # -- models -------------------------------------------------------------------------------
    @property
    def loaded_model_name(self) -> str | None:
        return self.model_store.loaded_name

    async def installed_names_now(self) -> InstalledNames:
        """installed_names, read at most every NAMES_TTL_S: a burst of submits costs one listing, not one each."""
        cached = self._names
        if cached is None or time.monotonic() - cached[0] > NAMES_TTL_S:
            names = await anyio.to_thread.run_sync(self.installed_names)
            self._names = cached = (time.monotonic(), names)
        return cached[1]

    def image_threads(self) -> anyio.CapacityLimiter:
        """Worker threads for storing request images (fetch, decode, encode): a few more than decode slots."""
        if self._image_threads is None:
            self._image_threads = anyio.CapacityLimiter(self.decode_budget.concurrent * 2 + 2)
        return self._image_threads

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self, task_group: TaskGroup) -> None:
        # An unwritable outputs/ or inputs/ is reported (/health, 503 to submits) before any task runs.
        for fault in await anyio.to_thread.run_sync(self.storage.probe):
            log.error("storage.not_writable_at_start", reason=fault.describe())
        task_group.start_soon(self.storage.watch)
        # The read model catches up from its position, the live view is rebuilt from the log, and
        # the follower feeds both (and the bus) from there on.
        await anyio.to_thread.run_sync(self.read_model.catch_up, self.event_log)
        head = await anyio.to_thread.run_sync(self.event_log.last_seq)
        unfinished = await anyio.to_thread.run_sync(self._rebuild_live)
        await task_group.start(self.follower.run, head)
        self.webhooks = WebhookSender(
            task_group=task_group,
            event_log=self.event_log,
            outbox=self.webhook_outbox,
            load_record=self.final_record,
            url_of=self._webhook_url,
            applied=self.follower.reached,
            retries=self.settings.webhook_retries,
            timeout_s=self.settings.webhook_timeout_s,
            shape_body=self.webhook_body,
            allow_private=self.settings.allow_private_webhooks,
            secret=self.settings.webhook_secret,
        )
        await task_group.start(self.webhooks.run)
        # In a fleet a started task belongs to its runner (the queue hands it on if that runner goes
        # away), so an API node's restart only re-queues what never started (idempotent by task id).
        await recover(
            unfinished, commands=self.commands, event_log=self.event_log, store=self.store,
            fail_started=not self.settings.fleet,
        )  # fmt: skip
        if self.settings.fleet:
            task_group.start_soon(self._sweep_commands)
        if self.settings.runner:
            await anyio.to_thread.run_sync(self.runners.start)
        if not self.settings.runner:
            return  # the fleet's runners fetch the models they use
        missing = self.downloads.check_preset(self.preset)
        for item in missing:
            log.warning("model.missing", file=item.name, folder=str(self.settings.models_dir / item.kind), url=item.url)
        if missing and self.settings.download_models:
            fetch = threading.Thread(target=self.downloads.download_missing, args=(missing,), name="downloads")
            fetch.daemon = True
            fetch.start()

    async def _sweep_commands(self) -> None:
        """Fleet: queue again the pending tasks whose command is not in the queue (an API node that
        died between storing TaskQueued and queueing its command). A second command for a task is
        harmless: the runner that claims it finds the task started or ended, and acks it."""
        every_s = self.settings.ack_wait_s
        while True:
            await anyio.sleep(every_s)
            old = now_ms() - int(2 * every_s * 1000)
            stale = [task for task in list(self.live.pending.values()) if task.in_queue_mills < old]
            if not stale:
                continue
            try:
                waiting = set(await anyio.to_thread.run_sync(self.commands.pending))
                for task in stale:
                    if task.task_id not in waiting and task.task_id in self.live.pending:
                        log.warning("task.requeued", task_id=task.task_id, reason="its command was not in the queue")
                        await anyio.to_thread.run_sync(self.submit, task.task_id, task.req_params)
            except Exception as exc:  # the queue is unreachable now: the next sweep tries again
                log.warning("tasks.sweep_failed", error=str(exc))

    def _rebuild_live(self) -> list[dict[str, Any]]:
        """Worker thread: the tasks the log has not ended, their events applied to the live view."""
        unfinished = self.read_model.unfinished()
        for record in unfinished:
            for envelope in self.event_log.read(task_id=record["task_id"]):
                self.live.apply(envelope)
        return unfinished

    def _webhook_url(self, task_id: str) -> str:
        """Worker thread: where the task's webhook goes; "" for none, or when another node of the
        fleet sends it (one node claims each task's webhook, so it is sent once)."""
        record = self.read_model.get(task_id)
        url = (record or {}).get("webhook_url") or self.settings.webhook_url
        if url and self.webhook_claims is not None and not self.webhook_claims.claim(task_id):
            return ""
        return url

    async def stop(self) -> None:
        await anyio.to_thread.run_sync(self.runners.stop)
        # What the runner wrote while shutting down reaches the table now, not at the next start.
        await anyio.to_thread.run_sync(self.read_model.catch_up, self.event_log)
        checkpoint = getattr(self.event_log, "checkpoint", None)  # SQLite's WAL upkeep
        if checkpoint is not None:
            checkpoint()
        if self.settings.fleet:
            await anyio.to_thread.run_sync(self.backends.close)

    # -- commands -----------------------------------------------------------------------------
    def submit(self, task_id: str, params: dict[str, Any]) -> None:
        """Queue the Generate command of a task whose TaskQueued is stored."""
        self.commands.put(Generate(task_id=task_id, params=params))

    async def cancel(self, task_id: str) -> Literal["cancelled", "stopping", "unknown"]:
        """Cancel a pending task, or stop it if it already started: the log's version check decides."""
        live = self.live.get(task_id)
        if live is None:
            return "unknown"
        if live.task_status == "pending":
            self.commands.cancel(task_id)  # if a runner claimed it already, its TaskStarted races this:
            try:  # a pending task is at version 1 (its TaskQueued); of the two appends one wins
                await self.store.emit_async(TaskCancelled(task_id=task_id, at_ms=now_ms()), expected_version=1)
                return "cancelled"
            except AppendRefused:
                pass  # it started (or ended) first
        return "stopping" if await self.deliver(Stop(task_id=task_id)) else "unknown"

    async def control(self, action: Literal["stop", "skip"]) -> str | None:
        """Stop or skip the running task (in a fleet: the first one running); its id, or None."""
        task_id = next(iter(self.runners.running_tasks), None) or next(iter(self.live.running), None)
        if task_id is None:
            return None
        command = Stop(task_id=task_id) if action == "stop" else Skip(task_id=task_id)
        return task_id if await self.deliver(command) else None

    async def deliver(self, command: Stop | Skip) -> bool:
        """To this process's runner, else (in a fleet) to whichever runner holds the task."""
        if self.runners.deliver(command):
            return True
        return self.remote_control is not None and await self.remote_control.send(command)

    # -- reads --------------------------------------------------------------------------------
    async def runner_list(self) -> list[RunnerInfo]:
        """The fleet's runners (from their presence beats), or this process's own (`GET /runners`)."""
        if self.fleet_runners is not None:
            return await self.fleet_runners.list()
        models = self.settings.models_dir
        alive = [info for info, runner in zip(self.runners.infos(), self.runners.runners, strict=True) if runner.alive]
        return [await anyio.to_thread.run_sync(with_model_files, info, models) for info in alive]

    def runner_states(self) -> list[RunnerInfo]:
        """Worker thread: the runners without their file lists (at most a few seconds old in a fleet),
        for /health and /metrics."""
        if self.fleet_runners is not None:
            return self.fleet_runners.recent()
        return [info for info, runner in zip(self.runners.infos(), self.runners.runners, strict=True) if runner.alive]

    def installed_names(self) -> InstalledNames:
        """Worker thread: the names a request may use; in a fleet, the runners' model files too."""
        # Downloaded on first use unless downloads are off; in a fleet the runners' disks are not seen here.
        check = not self.settings.download_models and self.fleet_runners is None
        names = self.catalog.installed(self.style_book.names(), check_image_prompt_files=check)
        if self.fleet_runners is None:
            return names
        checkpoints, loras, vaes = self.fleet_runners.model_names()
        return msgspec.structs.replace(
            names, checkpoints=names.checkpoints | checkpoints, loras=names.loras | loras, vaes=names.vaes | vaes
        )

    async def record(self, task_id: str) -> dict[str, Any] | None:
        """Live state for pending/running tasks, else the stored record; URLs rendered."""
        live = self.live.get(task_id)
        if live is not None:
            return self.signer.render_record(live.record())
        stored = await self.stored_record(task_id)
        return self.signer.render_record(stored) if stored else None

    async def stored_record(self, task_id: str) -> dict[str, Any] | None:
        """The generate_record row as stored (paths relative to the data dir)."""
        return await anyio.to_thread.run_sync(self.read_model.get, task_id)

    async def final_record(self, task_id: str) -> dict[str, Any] | None:
        stored = await self.stored_record(task_id)
        return self.signer.render_record(stored) if stored else None

    def data_path(self, relative: str) -> Path:
        """A stored file as a local path (in a fleet, fetched into this node's cache first)."""
        return self.blobs.local_path(relative) or self.settings.data_dir / relative
