"""`fooocus-es runner`: a runner process with no HTTP server, for a fleet.

It pulls Generate commands from the fleet's queue when idle, writes events to the fleet's log and
files to its object store, and answers stop/skip for the task it holds. Models live in its own
`--data-dir` (downloaded there on first use, as with `serve`).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from typing import Any

import msgspec
import structlog

from fooocus_es.engine.models.catalog import ModelCatalog
from fooocus_es.engine.models.downloads import ModelDownloads
from fooocus_es.engine.planning import presets
from fooocus_es.engine.planning.styles import StyleBook
from fooocus_es.events.store import EventStore
from fooocus_es.fleet.backends import open_backends
from fooocus_es.fleet.control import ControlListener
from fooocus_es.fleet.presence import PresenceBeat, RunnerInfo, runner_info
from fooocus_es.runner.worker import Runner
from fooocus_es.settings import Settings

log = structlog.get_logger("fooocus_es.runner")


def run_runner(settings: Settings, stop: threading.Event | None = None) -> None:
    """Block until SIGTERM/SIGINT (or `stop` is set), running tasks from the fleet's queue."""
    if not settings.fleet:
        raise ValueError("log_url: a runner process needs the fleet's log (--log nats://HOST:PORT)")
    from fooocus_es.engine.diffusion.pipeline import Engine
    from fooocus_es.engine.models.store import ModelStore
    from fooocus_es.services import resolve_device

    device = resolve_device(settings.device)
    for folder in (settings.outputs_dir, settings.inputs_dir):
        folder.mkdir(parents=True, exist_ok=True)
    backends = open_backends(settings)
    cache_mb = settings.model_cache_mb
    model_store = ModelStore(
        settings.models_dir, device=device, cache_bytes=cache_mb * 1024 * 1024 if cache_mb else None
    )
    downloads = ModelDownloads(ModelCatalog(settings.models_dir, settings.data_dir), model_store.download)
    preset = presets.preset_request_defaults(presets.load_preset(settings.preset, settings.data_dir))

    def make_engine() -> Any:
        if settings.torch_threads > 0:
            import torch

            torch.set_num_threads(settings.torch_threads)
        return Engine(model_store, settings.data_dir)

    runner = Runner(
        EventStore(backends.event_log),
        backends.commands,
        make_engine,
        settings.data_dir,
        device,
        warm_model=preset.get("base_model_name"),
        style_book=StyleBook(settings.data_dir),
        fetch_models=downloads.fetch_for_plan,
        blobs=backends.blobs,
        runner_id=f"{socket.gethostname()}-{os.getpid()}-{device}",
        retry_interrupted=settings.retry_interrupted,
    )
    assert backends.nats is not None
    listener = ControlListener(backends.nats, runner.deliver)

    def info(state: str | None = None) -> RunnerInfo:
        made = runner_info(runner.runner_id, settings.pool, device, runner.running_task, model_store.loaded_name)
        return msgspec.structs.replace(made, state=state) if state else made  # type: ignore[arg-type]

    presence = PresenceBeat(backends.nats, info, settings.models_dir, replicas=settings.replicas)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    listener.start()
    runner.start()
    presence.start()
    log.info("runner.started", runner_id=runner.runner_id, pool=settings.pool, log=settings.log_url, device=device)
    try:
        while not stop.wait(1.0):
            if not runner.alive:
                log.error("runner.died", runner_id=runner.runner_id)
                break
    finally:
        presence.stop(msgspec.structs.replace(info("stopped"), task_id=None))
        listener.stop()
        runner.shutdown()
        backends.close()
        log.info("runner.stopped", runner_id=runner.runner_id)
