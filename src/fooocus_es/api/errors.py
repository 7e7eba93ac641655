"""Every 4xx names the field: one JSON shape for validation, parameter and input-image errors."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from fooocus_es.engine.planning.plan import ParamError
from fooocus_es.media.errors import InputImageError


class TooManyRequests(HTTPException):
    status_code = 429


class NotFound(HTTPException):
    status_code = 404


def _body(status: int, detail: str, field: str | None, extra: Any = None) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {"status_code": status, "detail": detail}
    if field is not None:
        body["field"] = field
    if extra:
        body["extra"] = extra
    return Response(body, status_code=status)


def on_validation(_: Request, exc: ValidationException) -> Response[dict[str, Any]]:
    extra = exc.extra if isinstance(exc.extra, list) else []
    first = extra[0] if extra and isinstance(extra[0], dict) else {}
    field = first.get("key")
    detail = f"{field}: {first.get('message')}" if first else exc.detail
    return _body(400, detail, field, extra)


def on_param_error(_: Request, exc: ParamError) -> Response[dict[str, Any]]:
    return _body(400, str(exc), exc.field)


def on_input_image(_: Request, exc: InputImageError) -> Response[dict[str, Any]]:
    return _body(400, str(exc), exc.field)


EXCEPTION_HANDLERS = {
    ValidationException: on_validation,
    ParamError: on_param_error,
    InputImageError: on_input_image,
}
