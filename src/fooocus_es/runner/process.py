"""`fooocus-es runner`: a runner process with no HTTP server, for a fleet.

It pulls Generate commands from the fleet's queue when idle, writes events to the fleet's log and
files to its object store, and answers stop/skip for the task it holds. Models live in its own
`--data-dir` (downloaded there on first use, as with `serve`).
"""

from __future__ import annotations

import signal
import threading
from functools import partial

import structlog

from fooocus_es.engine.models.catalog import ModelCatalog
from fooocus_es.engine.models.downloads import ModelDownloads
from fooocus_es.engine.planning import presets
from fooocus_es.engine.planning.styles import StyleBook
from fooocus_es.events.store import EventStore
from fooocus_es.fleet.backends import open_backends
from fooocus_es.runner.devices import DeviceRunners, device_names, make_model_store
from fooocus_es.settings import Settings

log = structlog.get_logger("fooocus_es.runner")


def run_runner(settings: Settings, stop: threading.Event | None = None) -> None:
    """Block until SIGTERM/SIGINT (or `stop` is set), running tasks from the fleet's queue."""
    if not settings.fleet:
        raise ValueError("log_url: a runner process needs the fleet's log (--log nats://HOST:PORT)")
    from fooocus_es.engine.diffusion.pipeline import Engine
    from fooocus_es.services import resolve_device

    devices = [resolve_device(name) for name in device_names(settings)]
    for folder in (settings.outputs_dir, settings.inputs_dir):
        folder.mkdir(parents=True, exist_ok=True)
    backends = open_backends(settings)
    first = make_model_store(settings, devices[0])
    downloads = ModelDownloads(ModelCatalog(settings.models_dir, settings.data_dir), first.download)
    preset = presets.preset_request_defaults(presets.load_preset(settings.preset, settings.data_dir))
    assert backends.nats is not None
    runners = DeviceRunners(
        settings, devices, store=EventStore(backends.event_log), commands=backends.commands, blobs=backends.blobs,
        engine_factory=partial(Engine, max_batch=settings.max_batch), style_book=StyleBook(settings.data_dir),
        fetch_models=downloads.fetch_for_plan, warm_model=preset.get("base_model_name"), nats=backends.nats,
        model_stores=[first],
    )  # fmt: skip
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    runners.start()
    ids = [runner.runner_id for runner in runners.runners]
    log.info("runner.started", runner_ids=ids, pool=settings.pool, log=settings.log_url, devices=devices)
    try:
        while not stop.wait(1.0):
            if not runners.alive:
                log.error("runner.died", runner_ids=ids)
                break
    finally:
        runners.stop()
        backends.close()
        log.info("runner.stopped", runner_ids=ids)
