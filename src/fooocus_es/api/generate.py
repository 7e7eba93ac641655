"""POST /v1/engine/generate/: accept, make durable, then answer in the mode the client asked for.

Every return mode is a view over the task's events; the request never owns the task, so a client
that disconnects leaves its task running and recorded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import anyio.to_thread
from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.params import Body
from litestar.response import Stream

from fooocus_es.api import examples
from fooocus_es.api.admission import enqueue, queue_place, validate_and_store
from fooocus_es.api.openapi_ops import binary, operation, sse_events
from fooocus_es.api.sse import Pacer, paced_progress, sleep_until, sse_event
from fooocus_es.api.structs import GenerateRequest, sent_fields
from fooocus_es.api.tolerance import drop_empty_image_prompts, ignored_fields, ignored_header, ignored_note
from fooocus_es.engine.planning import plan as planning
from fooocus_es.engine.planning import presets
from fooocus_es.engine.planning.plan import ParamError
from fooocus_es.events.bus import Subscription
from fooocus_es.media.outputs import MEDIA_TYPES, convert_for_accept

if TYPE_CHECKING:  # resolved through the signature namespace (api/deps.py)
    from fooocus_es.services import Services

BINARY_ACCEPT = ("image/png", "image/jpeg", "image/jpg", "image/webp")


def _mode(request: Request, params: dict[str, Any], sync_response: str) -> str:
    """FooocusAPI's priority: Accept image/* > stream_output > async_process > blocking.

    A blocking request answers image bytes (the seed's "both flags false") unless it asks for JSON
    or the server runs with --sync-response json (FooocusAPI since July 2024).
    """
    accept = request.headers.get("accept", "")
    if any(kind in accept for kind in (*BINARY_ACCEPT, "image/*")):
        return "binary"
    if params["stream_output"]:
        return "stream"
    if params["async_process"]:
        return "async"
    return "json" if "application/json" in accept or sync_response == "json" else "binary"


def resolve_request(services: Services, sent: dict[str, Any]) -> dict[str, Any]:
    layers = [services.preset_defaults]
    requested_preset = sent.get("preset", planning.NO_PRESET)
    if requested_preset not in (planning.NO_PRESET, "", services.settings.preset):
        try:
            layers.append(
                presets.preset_request_defaults(presets.load_preset(requested_preset, services.settings.data_dir))
            )
        except presets.PresetError as exc:
            raise ParamError("preset", str(exc)) from exc
    return planning.finalize(planning.merge_layers(sent, *layers))


@post(
    ["/generate/", "/generate"],
    status_code=200,
    summary="Generate images (FooocusAPI)",
    responses=examples.GENERATE_RESPONSES,
    operation_class=operation(
        content={
            "200": {
                **{kind: binary("The first image (Accept: image/*, or blocking)") for kind in MEDIA_TYPES.values()},
                "text/event-stream": sse_events("stream_output: data is a StreamMessage as JSON"),
            }
        }
    ),
)
async def generate(
    request: Request,
    data: Annotated[GenerateRequest, Body(examples=examples.GENERATE_BODIES)],
    services: NamedDependency[Services],
) -> Response[Any]:
    ignored = ignored_fields(await request.json(), GenerateRequest)
    sent = drop_empty_image_prompts(sent_fields(data))
    params = resolve_request(services, sent)
    mode = _mode(request, params, services.settings.sync_response)
    if mode == "binary":
        params["image_number"] = 1
    with queue_place(services):  # taken before any await: the bound holds under a burst
        params = await validate_and_store(services, params, sent)
        queued = await enqueue(services, params, stream=mode == "stream", notes=ignored_note(ignored))
    task_id, waiter, subscription = queued.task_id, queued.ended, queued.subscription
    headers = {"X-Task-Id": task_id, **ignored_header(ignored)}

    if mode == "stream":
        assert subscription is not None
        return Stream(
            _stream(services, task_id, subscription, waiter),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers},
        )
    if mode == "async":
        services.waiters.discard(task_id)
        record = await services.record(task_id)
        return Response(record, headers=headers)
    await waiter.wait()
    record = await services.final_record(task_id)
    assert record is not None
    if mode == "json":
        return Response(record, headers=headers)
    return await _binary(services, request, task_id, params["output_format"], headers)


async def _binary(
    services: Services, request: Request, task_id: str, output_format: str, headers: dict[str, str]
) -> Response[Any]:
    stored = await services.stored_record(task_id)
    if not stored or not stored["result"]:
        error = (stored or {}).get("error") or {}
        headers = {**headers, "X-Task-Status": str((stored or {}).get("task_status"))}
        if error:
            return Response({"detail": error.get("message"), "error": error}, status_code=500, headers=headers)
        return Response(b"", status_code=204, headers=headers)
    path = await anyio.to_thread.run_sync(services.data_path, stored["result"][0])  # a fleet: an object-store read
    converted = await anyio.to_thread.run_sync(convert_for_accept, path, request.headers.get("accept"))
    if converted is not None:
        content, media_type = converted
    else:
        content, media_type = await anyio.to_thread.run_sync(path.read_bytes), MEDIA_TYPES[output_format]
    return Response(content, media_type=media_type, headers=headers)


async def _stream(
    services: Services, task_id: str, subscription: Subscription, ended: anyio.Event
) -> AsyncIterator[bytes]:
    """FooocusAPI's stream: paced progress events (see api/sse.py), then the final message.

    A client that goes away only ends this generator (finally: unsubscribe); the task runs on.
    """
    pacer = Pacer(1.0 / services.settings.stream_rate)
    try:
        async with subscription.receive, aclosing(paced_progress(subscription.receive, ended, pacer)) as messages:
            async for message in messages:
                yield sse_event(message)
        # Normal end, or cut off for lagging behind: either way the waiter tells when it ended.
        await ended.wait()
        final = await _final_message(services, task_id)
        await sleep_until(pacer.final_due())  # never in the same read as the last progress event
        yield sse_event(final)
    finally:
        services.bus.unsubscribe(subscription)
        services.waiters.discard(task_id)


async def _final_message(services: Services, task_id: str) -> dict[str, Any]:
    record = await services.final_record(task_id)
    assert record is not None
    status = record["task_status"]
    message = {"finished": "Finished", "skip": "Finished", "stop": "Stopped", "cancelled": "Cancelled"}.get(status)
    if message is None:
        error = record.get("error") or {}
        message = f"Failed: {error.get('message', status)}"
    body: dict[str, Any] = {"progress": 100, "preview": None, "message": message, "images": record["result"]}
    if record.get("error"):
        body["error"] = record["error"]
    return body
