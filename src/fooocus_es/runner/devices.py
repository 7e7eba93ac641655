"""One runner per device on one queue (`--devices cuda:0,cuda:1`), as `serve` and `fooocus-es runner` run them.

Each device gets its own ModelStore (a pipeline lives on one device) and Runner thread; they claim
from the same CommandQueue, so an idle GPU takes the next task while another is busy. In a fleet
each runner beats its own presence entry, and one control listener hands stop/skip to whichever
runner holds the task.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from fooocus_es.engine.planning.styles import StyleBook
from fooocus_es.events.store import EventStore
from fooocus_es.fleet.control import ControlListener
from fooocus_es.fleet.presence import PresenceBeat, RunnerInfo, runner_info
from fooocus_es.media.blobs import BlobStore
from fooocus_es.ops.storage import StorageHealth
from fooocus_es.runner.queue import CommandQueue
from fooocus_es.runner.worker import MAX_HELD, EngineLike, ModelFetcher, Runner
from fooocus_es.settings import Settings
from fooocus_es.tasks.commands import Control

if TYPE_CHECKING:
    from fooocus_es.engine.models.store import ModelStore
    from fooocus_es.fleet.connection import NatsThread

# Builds a runner's engine over its device's model store, once, on the runner thread.
EngineFactory = Callable[["ModelStore", Path], EngineLike]


def device_names(settings: Settings) -> list[str]:
    """The devices to run on: `--devices` (comma-separated, in order), else the one `--device`.

    Settings checked the names; "auto" is resolved by the caller (it imports torch). A name twice runs two runners on it
    (useful on a CPU, or a large GPU holding two pipelines).
    """
    return [part.strip() for part in settings.devices.split(",") if part.strip()] or [settings.device]


def make_model_store(settings: Settings, device: str, *, load_lock: threading.RLock | None = None) -> ModelStore:
    """`load_lock`: the process's one model-load lock, shared by every device's store (ModelStore)."""
    from fooocus_es.engine.models.store import ModelStore  # its file side: no torch until a load

    cache_mb = settings.model_cache_mb
    if settings.compile_mode != "off":
        from fooocus_es.engine.models.compile import use_compile_cache

        use_compile_cache(settings.data_dir)  # a restart finds its compiled graphs
    return ModelStore(
        settings.models_dir, device=device, cache_bytes=cache_mb * 1024 * 1024 if cache_mb else None,
        load_lock=load_lock, compile_mode=settings.compile_mode,
    )  # fmt: skip


@dataclass
class DeviceRunner:
    runner: Runner
    model_store: ModelStore
    presence: PresenceBeat | None

    def info(self, pool: str) -> RunnerInfo:
        """Its state for /runners and the presence beat (no I/O: read on the NATS loop)."""
        runner = self.runner
        task_id = next(iter(runner.running_tasks), None)  # a batch's first task (--max-batch)
        return runner_info(runner.runner_id, pool, runner.device, task_id, self.model_store.loaded_name)


class DeviceRunners:
    def __init__(
        self,
        settings: Settings,
        devices: Sequence[str],
        *,
        store: EventStore,
        commands: CommandQueue,
        blobs: BlobStore,
        engine_factory: EngineFactory | None,
        style_book: StyleBook,
        fetch_models: ModelFetcher | None,
        warm_model: str | None,
        nats: NatsThread | None,
        storage: StorageHealth | None = None,
        model_stores: Sequence[ModelStore] = (),
    ) -> None:
        """`model_stores`: stores already made for some devices (by position), the rest are made here."""
        self.settings = settings
        self.parts: list[DeviceRunner] = []
        stores = list(model_stores)
        # Loads patch torch process-wide: every store of the process shares the first one's lock.
        construction = stores[0].construction if stores else threading.RLock()
        if devices and engine_factory is None:
            raise ValueError("engine_factory: runners need an engine")
        for index, device in enumerate(devices):
            model_store = (
                stores[index] if index < len(stores) else make_model_store(settings, device, load_lock=construction)
            )
            suffix = f"-{index}" if list(devices).count(device) > 1 else ""
            runner = Runner(
                store, commands, _engine_maker(settings, engine_factory, model_store), settings.data_dir, device,
                warm_model=warm_model, style_book=style_book, fetch_models=fetch_models,
                blobs=blobs, runner_id=f"{socket.gethostname()}-{os.getpid()}-{device}{suffix}",
                retry_interrupted=settings.retry_interrupted, storage=storage, hand_over=settings.fleet,
                preview_interval_s=1.0 / settings.stream_rate,
                max_held=1 if settings.fleet or len(devices) > 1 else MAX_HELD,  # others share the queue
            )  # fmt: skip
            part = DeviceRunner(runner, model_store, None)
            if nats is not None:
                part.presence = PresenceBeat(
                    nats, lambda part=part: part.info(settings.pool), settings.models_dir, replicas=settings.replicas
                )
            self.parts.append(part)
        self.listener = ControlListener(nats, self.deliver) if nats is not None else None

    @property
    def runners(self) -> list[Runner]:
        return [part.runner for part in self.parts]

    def start(self) -> None:
        """Blocking (the control subscription is a NATS round trip): call from a worker thread."""
        if self.listener is not None:
            self.listener.start()
        for part in self.parts:
            part.runner.start()
            if part.presence is not None:
                part.presence.start()

    def stop(self) -> None:
        """Blocking: presence says "stopped", then each runner ends its task (single machine: failed
        "interrupted"; a fleet: handed back to the queue for another runner)."""
        if self.listener is not None:
            self.listener.stop()
        for part in self.parts:
            if part.presence is not None:
                final = msgspec.structs.replace(part.info(self.settings.pool), state="stopped", task_id=None)
                part.presence.stop(final)
        for runner in self.runners:  # all stop first, then the queue closes: each can hand its task back
            runner.stop_soon()
        for runner in self.runners:
            runner.join()
        if self.parts:
            self.parts[0].runner.queue.close()

    def deliver(self, command: Control) -> bool:
        """Stop or skip reaches whichever runner holds the task; False when none here does."""
        return any(runner.deliver(command) for runner in self.runners)

    @property
    def running_tasks(self) -> list[str]:
        return [task_id for runner in self.runners for task_id in runner.running_tasks]

    @property
    def alive(self) -> bool:
        """Every runner thread runs (one that died is a bug to report in /health)."""
        return all(runner.alive for runner in self.runners)

    def infos(self) -> list[RunnerInfo]:
        return [part.info(self.settings.pool) for part in self.parts]


def _engine_maker(
    settings: Settings, factory: EngineFactory | None, model_store: ModelStore
) -> Callable[[], EngineLike]:
    assert factory is not None  # DeviceRunners checked it

    def make() -> EngineLike:
        if settings.torch_threads > 0:
            import torch

            torch.set_num_threads(settings.torch_threads)
        return factory(model_store, settings.data_dir)

    return make
