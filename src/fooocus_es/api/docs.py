"""Offline API docs: /schema (ReDoc), /schema/swagger and /docs (Swagger), with their scripts served locally.

Litestar's doc pages load their JavaScript from CDNs by default, which leaves them blank on a
server without internet; here ReDoc is vendored (docs_assets/) and Swagger UI comes from a pinned
PyPI package. The assets are public (no data in them); the pages and openapi.json keep the API key.
"""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle
from litestar import MediaType, Request, Response, get
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import RedocRenderPlugin, SwaggerRenderPlugin
from litestar.router import Router
from litestar.static_files import create_static_files_router

from fooocus_es import __version__

ASSETS = "/_docs"
_FAVICON = '<link rel="icon" type="image/svg+xml" href="/web/favicon.svg">'  # the default is a CDN image
_REDOC_DIR = Path(__file__).resolve().parents[1] / "docs_assets"


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="fooocus-es",
        version=__version__,
        description="A FooocusAPI-compatible SDXL image server on diffusers, built on an event-sourced task log.",
        render_plugins=[
            RedocRenderPlugin(
                js_url=f"{ASSETS}/redoc/redoc.standalone.js", google_fonts=False, path="/redoc", favicon=_FAVICON
            ),
            SwaggerRenderPlugin(
                js_url=f"{ASSETS}/swagger/swagger-ui-bundle.js",
                css_url=f"{ASSETS}/swagger/swagger-ui.css",
                standalone_preset_js_url=f"{ASSETS}/swagger/swagger-ui-standalone-preset.js",
                path="/swagger",
                favicon=_FAVICON,
            ),
        ],
    )


def asset_routers() -> list[Router]:
    def router(name: str, directory: Path | str) -> Router:
        return create_static_files_router(
            path=f"{ASSETS}/{name}", directories=[directory], include_in_schema=False, opt={"public": True}
        )

    return [router("redoc", _REDOC_DIR), router("swagger", swagger_ui_bundle.swagger_ui_path)]


@get(["/docs", "/docs/"], include_in_schema=False, media_type=MediaType.HTML)
async def swagger_page(request: Request) -> Response[bytes]:
    """FastAPI's /docs, where FooocusAPI serves Swagger: readiness probes and users look there."""
    config = request.app.openapi_config
    assert config is not None
    swagger = next(plugin for plugin in config.render_plugins if isinstance(plugin, SwaggerRenderPlugin))
    return Response(swagger.render(request, request.app.openapi_schema.to_schema()), media_type=MediaType.HTML)
