"""Every 4xx names the field: one JSON shape for validation, parameter and input-image errors."""

from __future__ import annotations

import sqlite3
import sys
from typing import Any, Final

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import Scope

from fooocus_es.api.json_body import MalformedJson
from fooocus_es.engine.planning.plan import ParamError
from fooocus_es.media.errors import InputImageError
from fooocus_es.ops.storage import StorageFault, classify

# How soon a client may try again after a full queue, busy decoders or a storage fault.
RETRY_QUEUE_S = "10"
RETRY_STORAGE_S = "5"

# Exceptions that are a client's mistake without being HTTPExceptions: their handlers answer 400.
_CLIENT_ERRORS: Final = (ParamError, InputImageError, MalformedJson)
_MAX_LOGGED_DETAIL: Final = 300


class TooManyRequests(HTTPException):
    status_code = 429


class StorageUnavailable(HTTPException):
    """The task log or the data dir cannot be written: 503, or 507 for a full disk."""

    status_code = 503

    @classmethod
    def of(cls, fault: StorageFault) -> StorageUnavailable:
        return cls(
            status_code=fault.status_code,
            detail=f"{fault.describe()}; no task is accepted until it can be written again, retry later",
            headers={"Retry-After": RETRY_STORAGE_S},
            extra={"storage": fault.kind, "place": fault.place},
        )


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
    response = _body(exc.status_code, str(exc), exc.field)  # 400, or 413/429 for the decode budget
    if exc.status_code == 429:
        response.headers["Retry-After"] = RETRY_QUEUE_S
    return response


def on_storage_error(_: Request, exc: sqlite3.Error | ConnectionError) -> Response[dict[str, Any]]:
    """A write the log refused for a storage reason on any route, or a fleet's NATS server that did
    not answer: a 503/507 with a reason, never a bare 500."""
    kind = classify(exc)
    if kind is None:  # a bug, not storage: the plain 500 (logged with its traceback)
        return _body(500, "Internal Server Error", None)
    status = 507 if kind == "full" else 503
    what = "is unreachable" if kind == "unreachable" else "cannot be written"
    response = _body(status, f"the task log {what} ({exc}); retry later", None)
    response.headers["Retry-After"] = RETRY_STORAGE_S
    return response


EXCEPTION_HANDLERS = {
    ValidationException: on_validation,
    ParamError: on_param_error,
    InputImageError: on_input_image,
    sqlite3.Error: on_storage_error,
    ConnectionError: on_storage_error,  # fleet.connection.NatsUnavailable
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
    if isinstance(exc, ConnectionError) and classify(exc) == "unreachable":  # a 503 with a reason, not a bug
        logger.warning("request.unavailable", method=scope.get("method"), path=scope["path"], error=str(exc))
        return
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
