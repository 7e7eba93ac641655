"""An old-wire generation request: translated, then admitted exactly as /v1/engine/generate/ admits one.

translate -> GenerateRequest -> sent_fields -> resolve_request -> validate_and_store -> enqueue: the
task is an ordinary task (in /tasks, its events, webhooks, replay); only the answer is shaped
as Fooocus-API's (`call_worker`): async returns the job at once; `Accept: image/png` (header or
`?accept=`) returns the first image's bytes; otherwise the request blocks and returns the list of
results, `[]` when the job failed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, Final

import anyio.to_thread
from litestar import MediaType, Request, Response

from fooocus_es.api.admission import enqueue, queue_place, validate_and_store
from fooocus_es.api.errors import TooManyRequests
from fooocus_es.api.fooocus_api import jobs
from fooocus_es.api.fooocus_api.kinds import JobType, RouteKind
from fooocus_es.api.fooocus_api.multipart import FormBody
from fooocus_es.api.fooocus_api.responses import QUEUE_IS_FULL, AsyncJobResponse, succeeded
from fooocus_es.api.fooocus_api.translate import Installed, Translation, rename_field, to_request, translate
from fooocus_es.api.generate import resolve_request
from fooocus_es.api.structs import sent_fields
from fooocus_es.api.tolerance import drop_empty_image_prompts, ignored_header, ignored_note
from fooocus_es.engine.planning.plan import REQUEST_DEFAULTS, ParamError
from fooocus_es.media.errors import InputImageError
from fooocus_es.media.outputs import convert_for_accept
from fooocus_es.services import Services

MAX_LISTED: Final = 50  # as api/tolerance.py: a body of junk keys does not get a note per key


def _installed(services: Services) -> Installed:
    """Blocking (reads the model folders): the names translate.py may keep."""
    names = services.installed_names()
    return Installed(
        checkpoints=names.checkpoints | services.catalog.fetchable("checkpoints"),
        loras=names.loras,
        vaes=names.vaes,
        styles=names.styles,
        default_model=str(services.preset_defaults.get("base_model_name", REQUEST_DEFAULTS["base_model_name"])),
    )


def wants_png(request: Request) -> bool:
    """Upstream answers bytes only for exactly image/png; `?accept=` overrides the header."""
    accept = request.query_params.get("accept") or request.headers.get("accept") or ""
    return accept.split(",")[0].split(";")[0].strip().lower() == "image/png"


def _renamed(exc: ParamError | InputImageError, translation: Translation, form: FormBody | None) -> Exception:
    name = rename_field(exc.field, translation.origin)
    if form is not None:
        name = rename_field(name, form.origin)
    return type(exc)(name, exc.message)


async def submit(
    request: Request, services: Services, kind: RouteKind, body: Mapping[str, Any], form: FormBody | None = None
) -> Response:
    installed = await anyio.to_thread.run_sync(_installed, services)
    try:
        translation = translate(kind, body, installed)
    except ParamError as exc:
        raise _renamed(exc, Translation(kind), form) from None
    ignored = [*(form.ignored if form is not None else []), *translation.ignored][:MAX_LISTED]
    png = wants_png(request)
    try:
        sent = drop_empty_image_prompts(sent_fields(to_request(translation)))
        params = resolve_request(services, sent)
        if png:
            params["image_number"] = 1  # upstream: one image in the bytes mode
    except (ParamError, InputImageError) as exc:
        raise _renamed(exc, translation, form) from None
    with contextlib.ExitStack() as admitting:  # the place is held until the command is queued
        try:  # taken before any await: the bound holds under a burst
            admitting.enter_context(queue_place(services))
        except TooManyRequests:
            return _queue_full(translation.job_type, async_process=bool(params["async_process"]), png=png)
        try:
            params = await validate_and_store(services, params, sent)
        except (ParamError, InputImageError) as exc:
            raise _renamed(exc, translation, form) from None
        notes = [*ignored_note(ignored), *translation.notes]
        queued = await enqueue(services, params, stream=False, notes=notes, wire=translation.wire)
    headers = {"X-Task-Id": queued.task_id, **ignored_header(ignored)}
    if params["async_process"]:
        services.waiters.discard(queued.task_id)
        answer = await jobs.job(services, queued.task_id)
        return Response(answer, headers=headers)
    await queued.ended.wait()
    stored = await services.stored_record(queued.task_id)
    assert stored is not None
    if png:
        return await _png(services, stored, headers)
    results = await jobs.results_of(services, stored) if succeeded(stored["task_status"]) else []
    return Response(results, headers=headers)


async def _png(services: Services, stored: dict[str, Any], headers: dict[str, str]) -> Response:
    paths = stored["result"] if succeeded(stored["task_status"]) else []
    if not paths:
        error = stored.get("error") or {}
        detail = error.get("message") or f"the job ended as {stored['task_status']!r} without an image"
        return Response({"detail": detail, "finish_reason": "ERROR"}, status_code=500, headers=headers)
    path = await anyio.to_thread.run_sync(services.data_path, paths[0])  # a fleet: an object-store read
    converted = await anyio.to_thread.run_sync(convert_for_accept, path, "image/png")
    content = converted[0] if converted is not None else await anyio.to_thread.run_sync(path.read_bytes)
    return Response(content, media_type="image/png", headers=headers)


def _queue_full(job_type: JobType, *, async_process: bool, png: bool) -> Response:
    """Upstream's answers when add_task finds the queue full (call_worker), with our Retry-After."""
    headers = {"Retry-After": "10"}
    if png:
        return Response("QUEUE_IS_FULL", status_code=409, media_type=MediaType.TEXT, headers=headers)
    if async_process:
        return Response(AsyncJobResponse("", job_type, "ERROR", 0, job_result=[QUEUE_IS_FULL]), headers=headers)
    return Response([QUEUE_IS_FULL], headers=headers)
