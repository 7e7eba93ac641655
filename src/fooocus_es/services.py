"""The server's parts, built from Settings and wired on the event loop by the app's lifespan."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.to_thread
import structlog
from anyio.abc import TaskGroup

from fooocus_es.api.urls import UrlSigner
from fooocus_es.engine.models.catalog import ModelCatalog, missing_downloads, names_on_disk
from fooocus_es.engine.models.safety import safety_checker_installed
from fooocus_es.engine.planning import presets
from fooocus_es.engine.planning.plan import INPAINT_DIR
from fooocus_es.engine.planning.plan_types import GenerationPlan
from fooocus_es.engine.planning.styles import StyleBook
from fooocus_es.events.bus import Bus
from fooocus_es.events.follower import LogFollower
from fooocus_es.events.log import AppendRefused
from fooocus_es.events.sqlite import SqliteEventLog
from fooocus_es.events.store import EventStore
from fooocus_es.events.types import TaskCancelled, TaskFailed, now_ms
from fooocus_es.media.blobs import LocalBlobs
from fooocus_es.media.conversions import ConversionCache
from fooocus_es.projections import records
from fooocus_es.projections.live import LiveTasks
from fooocus_es.projections.records import ReadModel
from fooocus_es.runner.queue import LocalCommandQueue
from fooocus_es.runner.worker import EngineLike, Runner
from fooocus_es.settings import Settings
from fooocus_es.subscribers.waiters import Waiters
from fooocus_es.subscribers.webhook_outbox import WebhookOutbox
from fooocus_es.subscribers.webhooks import BodyShaper, WebhookSender, record_as_body
from fooocus_es.tasks.commands import Generate, Skip, Stop

if TYPE_CHECKING:
    from fooocus_es.engine.models.store import ModelStore

log = structlog.get_logger("fooocus_es")

# Builds the runner's engine, once, on the runner thread; the default is engine.pipeline.Engine.
EngineFactory = Callable[["ModelStore", Path], EngineLike]

def resolve_device(requested: str) -> str:
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class ModelStatus:
    """Files the server's preset needs that are not on disk, and what is being done about them."""

    missing: dict[str, str] = field(default_factory=dict)  # file name -> where to put it / why
    downloading: dict[str, str] = field(default_factory=dict)  # file name -> progress text
    lock: threading.Lock = field(default_factory=threading.Lock)


class Services:
    def __init__(self, settings: Settings, *, engine_factory: EngineFactory | None = None) -> None:
        self.settings = settings
        for folder in (settings.outputs_dir, settings.inputs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.device = resolve_device(settings.device)
        self.blobs = LocalBlobs(settings.data_dir)  # inputs/ and outputs/
        self.conversions = ConversionCache()  # Accept conversions of stored files (media/conversions.py)
        self.event_log = SqliteEventLog(settings.db_path)
        self.read_model = ReadModel(settings.db_path)
        self.webhook_outbox = WebhookOutbox(settings.db_path)
        self.bus = Bus()
        self.follower = LogFollower(self.event_log, self.bus, self.read_model)
        self.store = EventStore(self.event_log, self.follower)
        self.commands = LocalCommandQueue()
        self.live = LiveTasks()
        self.waiters = Waiters()
        self.signer = UrlSigner(settings.public_base_url, settings.api_key)
        self.style_book = StyleBook(settings.data_dir)
        self.preset = presets.load_preset(settings.preset, settings.data_dir)
        self.preset_defaults = presets.preset_request_defaults(self.preset)
        self.model_status = ModelStatus()
        # Imported here, on one thread: diffusers' lazy imports are not thread-safe, and the
        # runner's warm-up and request threads would otherwise race into them.
        from fooocus_es.engine.models.store import ModelStore

        if engine_factory is None:
            from fooocus_es.engine.diffusion.pipeline import Engine

            engine_factory = Engine
        cache_mb = settings.model_cache_mb
        self.model_store = ModelStore(
            settings.models_dir, device=self.device, cache_bytes=cache_mb * 1024 * 1024 if cache_mb else None
        )
        self._engine_factory = engine_factory
        self.catalog = ModelCatalog(settings.models_dir, settings.data_dir)
        warm = self.preset_defaults.get("base_model_name")
        self.runner = Runner(
            self.store,
            self.commands,
            self._make_engine,
            settings.data_dir,
            self.device,
            warm_model=warm,
            style_book=self.style_book,
            fetch_models=self.fetch_plan_models,
            blobs=self.blobs,
        )
        self.bus.add_listener(self.live.apply)
        self.bus.add_listener(self.waiters.apply)
        # What a webhook POSTs; the app sets it so each wire's tasks get that wire's body.
        self.webhook_body: BodyShaper = record_as_body

    # -- models -------------------------------------------------------------------------------
    @property
    def loaded_model_name(self) -> str | None:
        return self.model_store.loaded_name

    def _make_engine(self) -> Any:
        if self.settings.torch_threads > 0:
            import torch

            torch.set_num_threads(self.settings.torch_threads)
        return self._engine_factory(self.model_store, self.settings.data_dir)

    def fetch_plan_models(self, plan: GenerationPlan, report: Callable[[str], None]) -> None:
        """Runner thread: download the plan's missing files that have a known URL, reporting progress.

        Files with no known URL are left to the engine, whose error names the file and its folder.
        """
        downloads = self.catalog.downloads()
        for name, kind in self.catalog.plan_files(plan):
            known = downloads.get(name)
            if (self.settings.models_dir / kind / name).exists() or known is None or known.kind != kind:
                continue  # on disk, or no URL for a file of this kind
            url = known.url
            shown = [-1]  # the last percentage reported

            def progress(done: int, total: int | None, name: str = name, shown: list[int] = shown) -> None:
                percent = done * 100 // total if total else -1
                if percent >= shown[0] + 5 or (percent == -1 and done // (64 << 20) > shown[0]):
                    shown[0] = percent if total else done // (64 << 20)
                    amount = f"{percent}%" if total else f"{done >> 20} MiB"
                    report(f"Downloading {name}: {amount}")
                with self.model_status.lock:
                    self.model_status.downloading[name] = f"{percent}%" if total else f"{done} bytes"

            log.info("model.download_started", file=name, url=url)
            try:
                self.model_store.download(name, url, kind, progress)  # type: ignore[arg-type]
            finally:
                with self.model_status.lock:
                    self.model_status.downloading.pop(name, None)
            log.info("model.downloaded", file=name)

    def admission_names(self) -> dict[str, Any]:
        """What validate_names checks requests against, read from disk (blocking: call in a thread)."""
        models_dir = self.settings.models_dir
        inpaint_dir = models_dir / INPAINT_DIR
        return {
            "checkpoints": set(names_on_disk(models_dir, "checkpoints")),
            "loras": set(names_on_disk(models_dir, "loras")) | self.catalog.fetchable("loras"),
            "vaes": set(names_on_disk(models_dir, "vae")) | self.catalog.fetchable("vae"),
            "safety_checker": safety_checker_installed(self.settings.models_dir),
            "inpaint_files": {p.name for p in inpaint_dir.iterdir()} if inpaint_dir.is_dir() else set(),
            "styles": self.style_book.names(),
        }

    def check_preset_models(self) -> list[tuple[str, str, str]]:
        """The server preset's files that are missing: (name, url, models sub-folder)."""
        missing = missing_downloads(self.preset, self.settings.models_dir)
        with self.model_status.lock:
            for item in missing:
                path = self.settings.models_dir / item.kind / item.name
                self.model_status.missing[item.name] = f"put it at {path} (source: {item.url})"
        return [(item.name, item.url, item.kind) for item in missing]

    def download_missing(self, missing: list[tuple[str, str, str]]) -> None:
        """Worker thread: fetch the preset's files; failures leave the server up and named in /health."""
        for name, url, kind in missing:
            logged = [-1]  # the last tenth written to the log

            def progress(done: int, total: int | None, name: str = name, logged: list[int] = logged) -> None:
                text = f"{done / total:.0%}" if total else f"{done} bytes"
                with self.model_status.lock:
                    self.model_status.downloading[name] = text
                tenth = done * 10 // total if total else done // (256 * 1024 * 1024)  # 10% or 256 MiB steps
                if tenth > logged[0]:
                    logged[0] = tenth
                    log.info("model.download_progress", file=name, done_bytes=done, total_bytes=total, progress=text)

            try:
                log.info("model.download_started", file=name, url=url)
                self.model_store.download(name, url, kind, progress)
            except Exception as exc:
                log.error("model.download_failed", file=name, error=str(exc))
                with self.model_status.lock:
                    self.model_status.missing[name] = str(exc)
            else:
                log.info("model.downloaded", file=name)
                with self.model_status.lock:
                    self.model_status.missing.pop(name, None)
            finally:
                with self.model_status.lock:
                    self.model_status.downloading.pop(name, None)

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self, task_group: TaskGroup) -> None:
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
        )
        await task_group.start(self.webhooks.run)
        await self.recover(unfinished)
        self.runner.start()
        missing = self.check_preset_models()
        for name, url, kind in missing:
            log.warning("model.missing", file=name, folder=str(self.settings.models_dir / kind), url=url)
        if missing and self.settings.download_models:
            threading.Thread(target=self.download_missing, args=(missing,), name="downloads", daemon=True).start()

    def _rebuild_live(self) -> list[dict[str, Any]]:
        """Worker thread: the tasks the log has not ended, their events applied to the live view."""
        unfinished = records.unfinished(self.read_model.reader())
        for record in unfinished:
            for envelope in self.event_log.read(task_id=record["task_id"]):
                self.live.apply(envelope)
        return unfinished

    def _webhook_url(self, task_id: str) -> str:
        record = records.get(self.read_model.reader(), task_id)
        return (record or {}).get("webhook_url") or self.settings.webhook_url

    async def recover(self, unfinished: list[dict[str, Any]]) -> None:
        """Restart rule: queued-but-not-started tasks run again; started-but-not-ended ones failed."""
        for record in unfinished:
            task_id = record["task_id"]
            if record["start_mills"] is None:
                self.commands.put(Generate(task_id=task_id, params=record["req_params"]))
                continue
            version = await anyio.to_thread.run_sync(self.event_log.version, task_id)
            failed = TaskFailed(
                task_id=task_id, at_ms=now_ms(), error_type="Interrupted", message="interrupted by restart"
            )
            with contextlib.suppress(AppendRefused):  # another writer ended it meanwhile
                await self.store.emit_async(failed, expected_version=version)
        if unfinished:
            log.info("tasks.recovered", count=len(unfinished))

    async def stop(self) -> None:
        await anyio.to_thread.run_sync(self.runner.shutdown)
        # What the runner wrote while shutting down reaches the table now, not at the next start.
        await anyio.to_thread.run_sync(self.read_model.catch_up, self.event_log)
        self.event_log.checkpoint()

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
        return "stopping" if self.runner.deliver(Stop(task_id=task_id)) else "unknown"

    def control(self, action: Literal["stop", "skip"]) -> str | None:
        """Stop or skip the running task; its id, or None when nothing runs."""
        task_id = self.runner.running_task
        if task_id is None:
            return None
        command = Stop(task_id=task_id) if action == "stop" else Skip(task_id=task_id)
        return task_id if self.runner.deliver(command) else None

    # -- reads --------------------------------------------------------------------------------
    async def record(self, task_id: str) -> dict[str, Any] | None:
        """Live state for pending/running tasks, else the stored record; URLs rendered."""
        live = self.live.get(task_id)
        if live is not None:
            return self.signer.render_record(live.record())
        stored = await self.stored_record(task_id)
        return self.signer.render_record(stored) if stored else None

    async def stored_record(self, task_id: str) -> dict[str, Any] | None:
        """The generate_record row as stored (paths relative to the data dir)."""
        return await anyio.to_thread.run_sync(lambda: records.get(self.read_model.reader(), task_id))

    async def final_record(self, task_id: str) -> dict[str, Any] | None:
        stored = await self.stored_record(task_id)
        return self.signer.render_record(stored) if stored else None

    def data_path(self, relative: str) -> Path:
        return self.settings.data_dir / relative
