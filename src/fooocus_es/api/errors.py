"""Every 4xx names the field: one JSON shape for validation, parameter and input-image errors."""

from __future__ import annotations

import sys
from typing import Any, Final

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import Scope

from fooocus_es.api.json_body import MalformedJson
from fooocus_es.engine.planning.plan import ParamError
from fooocus_es.media.errors import InputImageError

# Exceptions that are a client's mistake without being HTTPExceptions: their handlers answer 400.
_CLIENT_ERRORS: Final = (ParamError, InputImageError, MalformedJson)
_MAX_LOGGED_DETAIL: Final = 300


class TooManyRequests(HTTPException):
    status_code = 429


class NotFound(HTTPException):
    status_code = 404


class Conflict(HTTPException):
    status_code = 409


class UnsupportedMediaType(HTTPException):
    status_code = 415


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


def status_of(exc: BaseException | None) -> int:
    """The status the exception handlers answer `exc` with (an instance's own `status` first: OpenAIError)."""
    for attribute in ("status", "status_code"):
        status = getattr(exc, attribute, None)
        if isinstance(status, int):
            return status
    return 400 if isinstance(exc, _CLIENT_ERRORS) else 500


def log_exception(logger: Any, scope: Scope, _traceback: list[str]) -> None:
    """Litestar's exception_logging_handler: a refused request (< 500) is one info line, no traceback.

    Only a server error is logged as a crash, with its traceback. The response line the logging
    middleware writes follows either way.
    """
    exc = sys.exc_info()[1]
    status = status_of(exc)
    if status >= 500:
        logger.exception("Uncaught exception", connection_type=scope["type"], path=scope["path"])
        return
    detail = exc.detail if isinstance(exc, HTTPException) else str(exc)
    extra = getattr(exc, "extra", None)
    if isinstance(exc, ValidationException) and isinstance(extra, list) and extra and isinstance(extra[0], dict):
        detail = f"{detail} ({extra[0].get('key')}: {extra[0].get('message')})"  # the field, as the 400 names it
    logger.info(
        "request.refused",
        method=scope.get("method"),
        path=scope["path"],
        status_code=status,
        detail=str(detail)[:_MAX_LOGGED_DETAIL],
    )
