"""Which body types a route reads: JSON (or no Content-Type) everywhere, forms only where marked.

Routes used to decode any body as JSON, so a page could send one as `text/plain` or a form, the
types a browser sends cross-site without asking first (no CORS preflight). JSON routes now take
`application/json` (any `+json` type, any charset) or no Content-Type at all, as the older
Fooocus-API examples post `data=json.dumps(...)` (FastAPI reads that as JSON too); other types are
a 415. The multipart routes (older Fooocus-API v1 image routes, OpenAI edits) carry
opt={"forms": True} and take forms as well.
"""

from __future__ import annotations

from typing import Final

from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException
from litestar.handlers.base import BaseRouteHandler

from fooocus_es.api.cross_site import SAFE_METHODS

FORMS_OPT: Final = "forms"
FORM_TYPES: Final = ("multipart/form-data", "application/x-www-form-urlencoded")


class UnsupportedMediaType(HTTPException):
    status_code = 415


def is_json_type(content_type: str) -> bool:
    """`application/json`, `application/problem+json; charset=utf-8`, ...: FastAPI's rule."""
    main, _, sub = content_type.partition(";")[0].strip().lower().partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


def body_type_refusal(content_type: str | None, *, forms: bool) -> str | None:
    """Why a body of this Content-Type is refused by a route (forms: it also reads forms), or None."""
    if not content_type or not content_type.strip() or is_json_type(content_type):
        return None
    if forms and content_type.partition(";")[0].strip().lower() in FORM_TYPES:
        return None
    sent = content_type.partition(";")[0].strip()
    if forms:
        return f"Content-Type {sent!r}: this route reads multipart/form-data, a URL-encoded form or JSON"
    return f"Content-Type {sent!r}: this route reads a JSON body; send it as application/json (or with no Content-Type)"


def _has_body(connection: ASGIConnection) -> bool:
    length = connection.headers.get("content-length", "").strip()
    return length not in ("", "0") or "transfer-encoding" in connection.headers


def body_type_guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """415 for a body a route does not read; a request without a body passes whatever it declares."""
    if connection.scope.get("method", "GET") in SAFE_METHODS or not _has_body(connection):
        return
    refusal = body_type_refusal(connection.headers.get("content-type"), forms=bool(handler.opt.get(FORMS_OPT)))
    if refusal is not None:
        raise UnsupportedMediaType(refusal)
