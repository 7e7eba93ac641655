"""Task queries and control: /tasks, /tasks/{id}, its events, cancel, and /v1/engine/control."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import urlencode

import anyio
import anyio.to_thread
import msgspec
from litestar import Controller, HttpMethod, MediaType, Request, Response, delete, get, post, route
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.openapi.spec import OpenAPIFormat, OpenAPIType, Schema
from litestar.params import Parameter
from litestar.response import Stream

from fooocus_es.api import examples
from fooocus_es.api.errors import Conflict, NotFound
from fooocus_es.api.openapi_ops import operation
from fooocus_es.api.structs import ControlResponse, TasksResponse
from fooocus_es.events.types import TasksDeleted, event_type, now_ms

if TYPE_CHECKING:  # resolved through the signature namespace (api/deps.py)
    from fooocus_es.api.urls import UrlSigner
    from fooocus_es.events.log import EventLog
    from fooocus_es.events.store import EventStore
    from fooocus_es.media.blobs import BlobStore
    from fooocus_es.projections.live import LiveTasks
    from fooocus_es.projections.records import ReadModel
    from fooocus_es.services import Services


def _parse_time(name: str, value: str | None) -> int | None:
    if not value:
        return None
    text = value.strip().upper().replace("Z", "+00:00")  # RFC 3339 allows "t" and "z"
    text = _EXTRA_DIGITS.sub(r"\1", _LEAP_SECOND.sub(":59", text))  # what fromisoformat refuses of RFC 3339
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1000)  # naive times are local, as in FooocusAPI
    except (ValueError, OverflowError, OSError):
        raise ValidationException(
            f"{name}: expected an ISO 8601 time such as 2024-07-03T12:22:30, got {value!r}",
            extra=[{"key": name, "message": "invalid ISO 8601 time", "source": "query"}],
        ) from None


_LEAP_SECOND = re.compile(r"(?<=\d\d:\d\d):60")
_EXTRA_DIGITS = re.compile(r"(\.\d{6})\d+")  # beyond microseconds


# `action=delete` is documented in the description, not as a parameter: it needs `start_at`, a
# dependency between parameters OpenAPI cannot state. A time is an RFC 3339 date-time or empty.
_TIME = Schema(
    any_of=[
        Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.DATE_TIME),
        Schema(type=OpenAPIType.STRING, max_length=0),
    ]
)
_LIST_OPERATION = operation(hidden=["action"], schemas={"start_at": _TIME, "end_at": _TIME})
MAX_PAGE: Final = 1_000_000  # page * page_size stays far inside SQLite's 64-bit OFFSET


@get(
    "/",
    summary="Query tasks: history, current and pending",
    description="History is newest first, a page at a time (`page`, or the keyset cursor `before` that the"
    " `Link: <...>; rel=\"next\"` header of each full page carries); with `start_at` every ended task"
    " queued in the range, streamed. FooocusAPI's `action=delete` with a range (`start_at` required)"
    " deletes the records and output files in it and answers them as `history`.",
    responses=examples.TASKS_RESPONSES,
    response_headers=[
        ResponseHeader(name="Link", description="the next history page (keyset cursor)", documentation_only=True)
    ],
    operation_class=_LIST_OPERATION,
)
async def list_tasks(
    request: Request,
    live: NamedDependency[LiveTasks],
    signer: NamedDependency[UrlSigner],
    read_model: NamedDependency[ReadModel],
    event_store: NamedDependency[EventStore],
    blobs: NamedDependency[BlobStore],
    query_kind: Literal["all", "history", "current", "pending"] = Parameter(query="query", default="all"),
    page: int = Parameter(default=0, ge=0, le=MAX_PAGE),
    page_size: int = Parameter(default=10, ge=1, le=1000),
    before: int | None = Parameter(default=None, ge=1, description="keyset cursor: history rows below this id"),
    start_at: str | None = None,
    end_at: str | None = None,
    action: Literal["delete"] | None = None,
) -> Response[Any]:
    start_ms = _parse_time("start_at", start_at)
    end_ms = _parse_time("end_at", end_at) or now_ms()  # default: the time of this request
    if start_ms is not None and start_ms >= end_ms:
        start_ms = None  # FooocusAPI: an empty range means no time filter
    if action == "delete":
        if start_ms is None:
            raise ValidationException(
                "start_at: action=delete needs a time range (start_at before end_at)",
                extra=[{"key": "start_at", "message": "required for action=delete", "source": "query"}],
            )
        deleted = await _delete_range(read_model, event_store, signer, blobs, start_ms, end_ms)
        return Response(TasksResponse(history=deleted, current=[], pending=[]))
    render = signer.render_record
    current = [render(r) for r in live.current_records()] if query_kind in ("all", "current") else []
    pending = [render(r) for r in live.pending_records(page, page_size)] if query_kind in ("all", "pending") else []
    if query_kind not in ("all", "history"):
        return Response(TasksResponse(history=[], current=current, pending=pending))
    if start_ms is not None:
        batches = read_model.history_in_range(start_ms, end_ms)
        return Stream(_streamed_tasks(batches, render, current, pending), media_type=MediaType.JSON)
    rows = await anyio.to_thread.run_sync(
        lambda: read_model.history(page=page, page_size=page_size, before_id=before)
    )
    headers = {}
    if len(rows) == page_size:  # possibly more: the keyset link skips nothing on the next read
        following = request.url.with_replacements(query=_with_before(request, rows[-1]["id"]))
        headers["Link"] = f'<{following}>; rel="next"'
    history = [render(row) for row in rows]
    return Response(TasksResponse(history=history, current=current, pending=pending), headers=headers)  # type: ignore[arg-type]


def _with_before(request: Request, before: int) -> str:
    query = [(k, v) for k, v in request.query_params.multi_items() if k not in ("before", "page")]
    return urlencode([*query, ("before", str(before))])


async def _streamed_tasks(
    batches: Iterator[list[dict[str, Any]]],
    render: Callable[[dict[str, Any]], dict[str, Any]],
    current: list[dict[str, Any]],
    pending: list[dict[str, Any]],
) -> AsyncIterator[bytes]:
    """TasksResponse's JSON, with the history written as it is read: a range of 100k records is
    never in memory at once. Batches come from worker threads one after another."""
    try:
        yield b'{"history":['
        first = True
        while (batch := await anyio.to_thread.run_sync(next, batches, None)) is not None:
            for row in batch:
                yield (b"" if first else b",") + msgspec.json.encode(render(row))
                first = False
        yield b'],"current":' + msgspec.json.encode(current) + b',"pending":' + msgspec.json.encode(pending) + b"}"
    finally:
        batches.close()  # type: ignore[attr-defined]  # a generator: closes its connection


async def _delete_range(
    read_model: ReadModel, event_store: EventStore, signer: UrlSigner, blobs: BlobStore, start_ms: int, end_ms: int
) -> list[Any]:
    rows = await anyio.to_thread.run_sync(read_model.ended_in_range, start_ms, end_ms)
    if not rows:
        return []
    event = TasksDeleted(
        task_id=f"delete-{uuid.uuid4().hex}", at_ms=now_ms(), deleted_task_ids=[r["task_id"] for r in rows],
        start_ms=start_ms, end_ms=end_ms,
    )  # fmt: skip
    await event_store.emit_async(event)  # the deletion is durable before any file goes

    def remove_files() -> None:
        for row in rows:
            for relative in row["result"]:
                if relative.startswith("outputs/"):  # never inputs: they are shared by hash
                    blobs.delete(relative)

    await anyio.to_thread.run_sync(remove_files)
    return [signer.render_record(row) for row in rows]


class TaskController(Controller):
    """GET and DELETE /tasks/{task_id}, with an OPTIONS of its own: Litestar's generated one keeps
    the methods of the first handler registered on the path, so its `Allow` missed one of the two."""

    path = "/{task_id:str}"

    @route(http_method=[HttpMethod.OPTIONS], include_in_schema=False, status_code=204)
    async def allowed_methods(self) -> Response[None]:
        return Response(None, status_code=204, headers={"Allow": "DELETE, GET, OPTIONS"})

    @get(summary="One task's record", responses=examples.TASK_RESPONSES)
    async def get_task(self, task_id: str, services: NamedDependency[Services]) -> dict[str, Any]:
        record = await services.record(task_id)
        if record is None:
            raise NotFound(f"task_id: no task {task_id!r}")
        return record

    @delete(
        status_code=200,
        summary="Delete an ended task: its record and output files",
        description="As `GET /tasks?action=delete` for one task (input files stay: they are shared by hash). "
        "A pending or running task is a 409: cancel it first with `POST /tasks/{task_id}/cancel`.",
        responses=examples.DELETE_TASK_RESPONSES,
    )
    async def delete_task(self, task_id: str, services: NamedDependency[Services]) -> dict[str, Any]:
        record = await services.record(task_id)
        if record is None:
            raise NotFound(f"task_id: no task {task_id!r}")
        if not record.get("finish_mills"):
            raise Conflict(
                f"task_id: the task is {record['task_status']}; cancel it first (POST /tasks/{task_id}/cancel)"
            )
        if not await delete_ended(services, task_id):
            raise NotFound(f"task_id: no task {task_id!r}")
        return {"task_id": task_id, "message": "task deleted"}


async def delete_ended(services: Services, task_id: str) -> bool:
    """Remove an ended task's record and output files (a TasksDeleted event, as /tasks?action=delete)."""
    stored = await services.stored_record(task_id)
    if stored is None or stored["finish_mills"] is None:
        return False
    at = stored["in_queue_mills"]
    await services.store.emit_async(
        TasksDeleted(
            task_id=f"delete-{uuid.uuid4().hex}", at_ms=now_ms(), deleted_task_ids=[task_id], start_ms=at, end_ms=at
        )
    )  # durable before any file goes

    def remove_files() -> None:
        for relative in stored["result"]:
            if relative.startswith("outputs/"):  # never inputs: they are shared by hash
                services.blobs.delete(relative)

    await anyio.to_thread.run_sync(remove_files)
    return True


@get("/{task_id:str}/events", summary="The task's events in log order (the audit)", responses=examples.EVENTS_RESPONSES)
async def task_events(
    task_id: str, event_log: NamedDependency[EventLog], services: NamedDependency[Services]
) -> list[dict[str, Any]]:
    events = await anyio.to_thread.run_sync(lambda: list(event_log.read(task_id=task_id)))
    # A deleted task (DELETE /tasks/{id}, action=delete) is gone from the API; its events stay in the log.
    if not events or await services.record(task_id) is None:
        raise NotFound(f"task_id: no task {task_id!r}")
    return [{"seq": e.seq, "type": event_type(e.event), **msgspec.to_builtins(e.event)} for e in events]


async def _cancel(services: Services, task_id: str) -> dict[str, Any]:
    outcome = await services.cancel(task_id)
    if outcome == "unknown":
        if await services.record(task_id) is None:
            raise NotFound(f"task_id: no task {task_id!r}")
        return {"task_id": task_id, "message": "task already ended"}
    message = "task cancelled" if outcome == "cancelled" else "task stopping"
    return {"task_id": task_id, "message": message}


@post(
    "/{task_id:str}/cancel",
    status_code=200,
    summary="Cancel a pending task (stops it if running)",
    responses=examples.CANCEL_RESPONSES,
)
async def cancel_task(task_id: str, services: NamedDependency[Services]) -> dict[str, Any]:
    return await _cancel(services, task_id)


@post(
    "/control",
    status_code=200,
    summary="Stop or skip the running task",
    description="`action=stop|skip` in the query string (`{\"action\": ...}` as a JSON body works too). "
    "Another action answers `Invalid control action`, as FooocusAPI does; none at all is a 400.",
    responses=examples.CONTROL_RESPONSES,
    operation_class=operation(required=["action"]),  # the JSON-body form stays undocumented
)
async def control(
    request: Request, services: NamedDependency[Services], action: str | None = None
) -> ControlResponse:
    """`action` from the query string (upstream), or from a JSON body `{"action": ...}` (some clients)."""
    if action is None:
        body = await request.json() if await request.body() else None
        action = body.get("action") if isinstance(body, dict) else None
    if action is None:
        raise ValidationException("action: required (stop or skip), in the query string or a JSON body")
    if action not in ("stop", "skip"):
        return ControlResponse("Invalid control action")
    task_id = await services.control(action)  # type: ignore[arg-type]
    if task_id is None:
        return ControlResponse("No task running")
    return ControlResponse("task stopped" if action == "stop" else "task skipped")
