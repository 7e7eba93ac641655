"""The server's parts as Litestar dependencies, and the lifespan that starts and stops them.

Shaped like Litestar's ChannelsPlugin: `on_app_init` registers one cached `Provide` per part and
joins the app's lifespan, so handlers declare what they use as typed parameters
(`live: LiveTasks`, `signer: UrlSigner`, ...) instead of reaching into `app.state`. `services`
itself stays available for the admission path and the record reads, which still live on the hub.

The types are also put in the signature namespace, so a handler module may import them under
TYPE_CHECKING only and Litestar still resolves its (postponed) annotations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import structlog
from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.di import Provide
from litestar.plugins import InitPluginProtocol

from fooocus_es.api.fooocus_api.jobs import webhook_body
from fooocus_es.api.urls import UrlSigner
from fooocus_es.engine.planning.styles import StyleBook
from fooocus_es.events.bus import Bus
from fooocus_es.events.log import EventLog
from fooocus_es.events.store import EventStore
from fooocus_es.media.blobs import BlobStore
from fooocus_es.media.conversions import ConversionCache
from fooocus_es.ops.metrics import TaskMetrics
from fooocus_es.projections.live import LiveTasks
from fooocus_es.projections.records import ReadModel
from fooocus_es.runner.devices import EngineFactory
from fooocus_es.services import Services
from fooocus_es.settings import Settings


def _constant(value: object) -> Provide:
    # The parts live as long as the app: build the answer once, never on a worker thread.
    return Provide(lambda: value, use_cache=True, sync_to_thread=False)


class ServicesPlugin(InitPluginProtocol):
    """Builds the server's parts from Settings, provides them to handlers, runs them for the app's life."""

    def __init__(self, settings: Settings, *, engine_factory: EngineFactory | None = None) -> None:
        self.settings = settings
        self.services = Services(settings, engine_factory=engine_factory)
        # Each wire's tasks get that wire's webhook body (Fooocus-API's jobs theirs, others the record).
        self.services.webhook_body = webhook_body(self.services)
        self.metrics = TaskMetrics(depth=lambda: self.services.live.depth, runner_states=self.services.runner_states)
        self.services.bus.add_listener(self.metrics.apply)

    def dependencies(self) -> dict[str, Provide]:
        """Parameter name -> provider: what a handler may ask for."""
        services = self.services
        parts: dict[str, Any] = {
            "services": services,
            "settings": services.settings,
            "live": services.live,
            "signer": services.signer,
            "event_log": services.event_log,
            "bus": services.bus,
            "event_store": services.store,
            "read_model": services.read_model,
            "blobs": services.blobs,
            "conversions": services.conversions,
            "model_store": services.model_store,
            "style_book": services.style_book,
            "metrics": self.metrics,
        }
        return {name: _constant(part) for name, part in parts.items()}

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.dependencies.update(self.dependencies())
        app_config.signature_types.extend(provided_types())
        app_config.lifespan.append(self.lifespan)
        return app_config

    @asynccontextmanager
    async def lifespan(self, _app: Litestar) -> AsyncIterator[None]:
        services = self.services
        async with anyio.create_task_group() as task_group:
            await services.start(task_group)
            structlog.get_logger("fooocus_es").info(
                "server.ready",
                base_url=self.settings.public_base_url,
                device=services.device,
                preset=self.settings.preset,
            )
            try:
                yield
            finally:
                await services.stop()
                task_group.cancel_scope.cancel()


def provided_types() -> tuple[type, ...]:
    """Every type dependencies() provides, for handlers whose modules import them under TYPE_CHECKING.

    Built when the app is, not on import: ModelStore brings torch, and importing the HTTP layer
    must not (an API-only node has no torch).
    """
    from fooocus_es.engine.models.store import ModelStore

    return (
        Services, Settings, LiveTasks, UrlSigner, Bus, EventLog, EventStore, ReadModel, BlobStore,
        ModelStore, StyleBook, TaskMetrics, ConversionCache,
    )  # fmt: skip
