"""Task queries and control: /tasks, /tasks/{id}, its events, cancel, and /v1/engine/control."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlencode

import anyio
import anyio.to_thread
import msgspec
from litestar import MediaType, Request, Response, delete, get, post
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.params import Parameter
from litestar.response import Stream

from fooocus_es.api import examples
from fooocus_es.api.errors import NotFound
from fooocus_es.api.structs import ControlResponse, TasksResponse
from fooocus_es.events.types import TasksDeleted, event_type, now_ms
from fooocus_es.projections import records

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
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValidationException(
            f"{name}: expected an ISO 8601 time such as 2024-07-03T12:22:30, got {value!r}",
            extra=[{"key": name, "message": "invalid ISO 8601 time", "source": "query"}],
        ) from None
    return int(moment.timestamp() * 1000)  # naive times are local, as in FooocusAPI


@get(
    "/",
    summary="Query tasks: history, current and pending",
    description="History is newest first, a page at a time (`page`, or the keyset cursor `before` that the"
    " `Link: <...>; rel=\"next\"` header of each full page carries); with `start_at` every ended task"
    " queued in the range, streamed.",
    responses=examples.TASKS_RESPONSES,
    response_headers=[
        ResponseHeader(name="Link", description="the next history page (keyset cursor)", documentation_only=True)
    ],
)
async def list_tasks(
    request: Request,
    live: NamedDependency[LiveTasks],
    signer: NamedDependency[UrlSigner],
    read_model: NamedDependency[ReadModel],
    event_store: NamedDependency[EventStore],
    blobs: NamedDependency[BlobStore],
    query_kind: Literal["all", "history", "current", "pending"] = Parameter(query="query", default="all"),
    page: int = Parameter(default=0, ge=0),
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
        batches = records.history_in_range(read_model.path, start_ms, end_ms)
        return Stream(_streamed_tasks(batches, render, current, pending), media_type=MediaType.JSON)
    rows = await anyio.to_thread.run_sync(
        lambda: records.history(read_model.reader(), page=page, page_size=page_size, before_id=before)
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
    rows = await anyio.to_thread.run_sync(lambda: records.ended_in_range(read_model.reader(), start_ms, end_ms))
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


@get("/{task_id:str}", summary="One task's record", responses=examples.TASK_RESPONSES)
async def get_task(task_id: str, services: NamedDependency[Services]) -> dict[str, Any]:
    record = await services.record(task_id)
    if record is None:
        raise NotFound(f"task_id: no task {task_id!r}")
    return record


@get("/{task_id:str}/events", summary="The task's events in log order (the audit)", responses=examples.EVENTS_RESPONSES)
async def task_events(task_id: str, event_log: NamedDependency[EventLog]) -> list[dict[str, Any]]:
    events = await anyio.to_thread.run_sync(lambda: list(event_log.read(task_id=task_id)))
    if not events:
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


@delete(
    "/{task_id:str}",
    status_code=200,
    summary="Cancel a pending task (same as POST .../cancel)",
    responses=examples.CANCEL_RESPONSES,
)
async def delete_task(task_id: str, services: NamedDependency[Services]) -> dict[str, Any]:
    return await _cancel(services, task_id)


@post("/control", status_code=200, summary="Stop or skip the running task", responses=examples.CONTROL_RESPONSES)
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
