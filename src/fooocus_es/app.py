"""create_app(settings): the Litestar app, assembled from the services plugin and the routers."""

from __future__ import annotations

from litestar import Litestar
from litestar.logging.config import StructLoggingConfig
from litestar.middleware.logging import LoggingMiddlewareConfig
from litestar.plugins.structlog import StructlogConfig, StructlogPlugin

from fooocus_es.api import docs
from fooocus_es.api.auth import ApiKeyGuard
from fooocus_es.api.body_types import body_type_guard
from fooocus_es.api.cors import cors_config
from fooocus_es.api.cross_site import CrossSiteGuard
from fooocus_es.api.deps import ServicesPlugin
from fooocus_es.api.errors import EXCEPTION_HANDLERS, log_exception
from fooocus_es.api.fooocus_api.routes import fooocus_api_router
from fooocus_es.api.hosts import HostCheckMiddleware, allowed_hosts
from fooocus_es.api.json_body import SafeBodyRequest
from fooocus_es.api.openai import openai_router
from fooocus_es.api.routers import native_routers
from fooocus_es.api.web import WEB_ROUTES
from fooocus_es.ops.metrics import prometheus_config
from fooocus_es.runner.devices import EngineFactory
from fooocus_es.settings import Settings


def create_app(settings: Settings, *, engine_factory: EngineFactory | None = None) -> Litestar:
    """The server. `engine_factory` replaces engine.pipeline.Engine (tests pass a fake engine)."""
    parts = ServicesPlugin(settings, engine_factory=engine_factory)
    cors = cors_config(settings)  # the cross-site guard allows the same origins
    logging = StructlogConfig(
        # Tracebacks for server errors only: every status < 500 is the client's mistake, one info line
        # (api/errors.py's log_exception decides by the answered status, also for ParamError & co).
        # 503/507 are storage faults, logged once as storage.fault where they are found.
        structlog_logging_config=StructLoggingConfig(
            pretty_print_tty=False,
            log_exceptions="always",
            exception_logging_handler=log_exception,
            disable_stack_trace={503, 507},
        ),
        middleware_logging_config=LoggingMiddlewareConfig(
            request_log_fields=["method", "path"], response_log_fields=["status_code"]
        ),
    )
    return Litestar(
        route_handlers=[
            *native_routers(),
            *WEB_ROUTES,
            openai_router(),
            fooocus_api_router(),
            docs.swagger_page,
            *docs.asset_routers(),
        ],
        guards=[
            ApiKeyGuard(settings.api_key, parts.services.signer),
            CrossSiteGuard(settings.api_key, cors.is_origin_allowed),
            body_type_guard,
        ],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        plugins=[parts, StructlogPlugin(config=logging)],
        middleware=[HostCheckMiddleware(allowed_hosts(settings)), prometheus_config().middleware],
        openapi_config=docs.openapi_config(),
        cors_config=cors,
        request_max_body_size=64 * 1024 * 1024,  # inline base64 images
        request_class=SafeBodyRequest,  # bounded nesting, invalid UTF-8 and 1e999 as 400s (api/json_body.py)
        on_startup=[docs.use_msgspec_schemas],  # the request schemas as msgspec validates them
    )
