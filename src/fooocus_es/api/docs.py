"""Offline API docs: /schema (ReDoc), /schema/swagger and /docs (Swagger), with their scripts served locally.

Litestar's doc pages load their JavaScript from CDNs by default, which leaves them blank on a
server without internet; here ReDoc is vendored (docs_assets/) and Swagger UI comes from a pinned
PyPI package. The assets are public (no data in them); the pages and openapi.json keep the API key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import msgspec
import swagger_ui_bundle
from litestar import Litestar, MediaType, Request, Response, get
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
    return Response(swagger.render(request, openapi_document(request.app)), media_type=MediaType.HTML)


def openapi_document(app: Litestar) -> dict[str, Any]:
    """The document /schema/openapi.json serves (Litestar's cached dict, with use_msgspec_schemas applied)."""
    return app.plugins.get("OpenAPIPlugin").provide_openapi_schema()  # by name: the class is in litestar._openapi


def use_msgspec_schemas(app: Litestar) -> None:
    """On start-up: the request structs' schemas as msgspec writes them, in place of Litestar's.

    Litestar copies a Meta constraint only when it is truthy, so `ge=0` and `min_length=0` vanish
    from the document (sharpness, the FreeU values, partial_images, ...) and constraints of list items
    (outpaint_distance) are not carried at all; msgspec's own JSON Schema is what it validates with.
    """
    from fooocus_es.api.openai import ImageGenerationRequest
    from fooocus_es.api.structs import GenerateRequest

    components = openapi_document(app).setdefault("components", {}).setdefault("schemas", {})
    _, definitions = msgspec.json.schema_components(
        [GenerateRequest, ImageGenerationRequest], ref_template="#/components/schemas/{name}"
    )
    components.update({name: lenient(definition) for name, definition in definitions.items()})


# What the lenient conversion (api/tolerance.py: msgspec's strict=False, as upstream's pydantic) also
# takes for a scalar: booleans as 0/1 or "true"/"false"/"1"/"0" in any case, numbers as numeric strings.
_BOOL_TEXT: Final = {"type": "string", "pattern": "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|1|0)$"}
_INT_TEXT: Final = {"type": "string", "pattern": "^-?[0-9]+$"}
_NUMBER_TEXT: Final = {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?$"}


def lenient(schema: Any) -> Any:
    """`schema` (msgspec's JSON Schema) with every boolean, integer and number also taking its text forms."""
    if isinstance(schema, list):
        return [lenient(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: lenient(value) if key in ("properties", "items", "anyOf") else value for key, value in schema.items()}
    if "properties" in schema:
        out["properties"] = {name: lenient(value) for name, value in schema["properties"].items()}
    kind = schema.get("type")
    if kind not in ("boolean", "integer", "number"):
        return out
    description = out.pop("description", None)
    alternatives = {"boolean": [{"enum": [0, 1]}, _BOOL_TEXT], "integer": [_INT_TEXT], "number": [_NUMBER_TEXT]}[kind]
    wrapped: dict[str, Any] = {"anyOf": [out, *alternatives]}
    if description is not None:
        wrapped["description"] = description
    return wrapped
