"""create_app(settings): the Litestar app, its services, and the lifespan that runs them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import structlog
from litestar import Litestar
from litestar.logging.config import StructLoggingConfig
from litestar.middleware.logging import LoggingMiddlewareConfig
from litestar.plugins.structlog import StructlogConfig, StructlogPlugin

from fooocus_es.api import docs, engines, files, generate, task_stream, tasks
from fooocus_es.api.auth import api_key_guard
from fooocus_es.api.cors import cors_config
from fooocus_es.api.errors import EXCEPTION_HANDLERS
from fooocus_es.api.fooocus_api.jobs import webhook_body
from fooocus_es.api.fooocus_api.routes import FOOOCUS_API_ROUTES
from fooocus_es.api.openai import OPENAI_ROUTES
from fooocus_es.api.web import WEB_ROUTES
from fooocus_es.ops.metrics import MetricsController, TaskMetrics, prometheus_config
from fooocus_es.services import Services
from fooocus_es.settings import Settings

ROUTES = [
    generate.generate,
    tasks.list_tasks,
    tasks.get_task,
    tasks.task_events,
    task_stream.task_stream,
    tasks.cancel_task,
    tasks.delete_task,
    tasks.control,
    files.outputs,
    files.inputs,
    engines.all_models,
    engines.memory,
    engines.clean_vram,
    engines.styles,
    engines.preset_list,
    engines.health,
    *WEB_ROUTES,
    *OPENAI_ROUTES,
    *FOOOCUS_API_ROUTES,
    MetricsController,
    docs.swagger_page,
    *docs.asset_routers(),
]


def create_app(settings: Settings) -> Litestar:
    services = Services(settings)
    services.webhook_body = webhook_body(services)
    metrics = TaskMetrics(depth=lambda: services.live.depth)
    services.bus.add_listener(metrics.apply)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with anyio.create_task_group() as task_group:
            await services.start(task_group)
            structlog.get_logger("fooocus_es").info(
                "server.ready", base_url=settings.public_base_url, device=services.device, preset=settings.preset
            )
            try:
                yield
            finally:
                await services.stop()
                task_group.cancel_scope.cancel()

    logging = StructlogConfig(
        # Tracebacks for server errors only: a 4xx is the client's mistake, logged as a response line.
        structlog_logging_config=StructLoggingConfig(
            pretty_print_tty=False, log_exceptions="always", disable_stack_trace={400, 401, 403, 404, 405, 413, 429}
        ),
        middleware_logging_config=LoggingMiddlewareConfig(
            request_log_fields=["method", "path"], response_log_fields=["status_code"]
        ),
    )
    app = Litestar(
        route_handlers=ROUTES,
        guards=[api_key_guard],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=[lifespan],
        plugins=[StructlogPlugin(config=logging)],
        middleware=[prometheus_config().middleware],
        openapi_config=docs.openapi_config(),
        cors_config=cors_config(settings),
        request_max_body_size=64 * 1024 * 1024,  # inline base64 images
    )
    app.state.services = services
    app.state.metrics = metrics
    return app
