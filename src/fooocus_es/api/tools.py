"""Fooocus's tools over HTTP: POST /v1/tools/describe-image and POST /v1/tools/generate_mask.

A tool call is a task like any other (design card: only the runner touches models): its image is
stored under inputs/, a TaskQueued with the call as its params goes through the same bounded queue
and audit log, and the request awaits the task's terminal event. So tool calls are listed by
/tasks (their req_params carry `"tool"`), and a describe's text is in its TaskFinished event
(/tasks/{id}/events). FooocusAPI runs them inline instead, beside the queue.
"""

from __future__ import annotations

import base64
import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Final

import anyio.to_thread
import msgspec
from litestar import MediaType, Request, Response, Router, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.spec import OpenAPIType, Schema
from litestar.params import Body

from fooocus_es.api import examples
from fooocus_es.api.admission import enqueue, queue_place, store_tool_image
from fooocus_es.api.body_types import FORM_TYPES, FORMS_OPT
from fooocus_es.api.fooocus_api.multipart import image_part
from fooocus_es.api.openapi_ops import binary, operation
from fooocus_es.api.tolerance import ignored_fields, ignored_header, ignored_note
from fooocus_es.engine.planning.demo_names import DEMO_CHECKPOINT
from fooocus_es.engine.planning.plan import ParamError
from fooocus_es.engine.planning.tool_files import call_files, missing_of, not_installed
from fooocus_es.engine.planning.tool_types import (
    DescribeCall,
    DescribeRequest,
    DescribeType,
    MaskCall,
    MaskOptions,
    ToolCall,
)
from fooocus_es.events.types import Event, TaskFailed, TaskFinished

if TYPE_CHECKING:  # resolved through the signature namespace (api/deps.py)
    from fooocus_es.services import Services

TAG: Final = "tools"
DESCRIBE_TYPES: Final = ("Photo", "Anime")
# Failures whose message is the client's to act on; a missing optional package is the server's (501).
_CLIENT_FAILURES: Final = frozenset({"ModelMissing", "ModelUnsupported", "ValueError"})
_NOT_INSTALLED: Final = "ToolUnavailable"
ONNX_MISSING: Final = (
    "onnxruntime is not installed on this server: install the tools extra "
    "(pip install 'fooocus-es[tools]', or pip install onnxruntime==1.32.0) and restart"
)


class ToolNotInstalled(HTTPException):
    status_code = 501


class DescribeImageBody(msgspec.Struct, kw_only=True):
    """FooocusAPI's describe-image body."""

    image: str  # base64, a data: URI or an http(s) URL
    image_type: DescribeType = "Photo"


class GenerateMaskBody(MaskOptions, frozen=True, kw_only=True):
    """FooocusAPI's GenerateMaskRequest: the image and the mask options with their defaults."""

    image: str


def _needs_onnxruntime(call: ToolCall) -> bool:
    if isinstance(call, DescribeCall):
        return call.request.image_type == "Anime"  # WD14 is ONNX only
    return call.options.mask_model != "sam"  # rembg's models are ONNX; GroundingDINO + SAM are torch


async def _run(
    services: Services, image: Any, make_call: Callable[[str], ToolCall], wire: str, ignored: list[str]
) -> tuple[Event, str]:
    """Store the image, queue the call as a task and wait for its end: (terminal event, task id)."""
    probe = make_call("")
    if _needs_onnxruntime(probe) and importlib.util.find_spec("onnxruntime") is None:
        raise ToolNotInstalled(detail=ONNX_MISSING)
    installed = (await services.installed_names_now()).tool_files  # None: fetched on first use
    missing = [] if installed is None or probe.demo else missing_of(call_files(probe), installed)
    if missing:
        field, what = (
            ("image_type", f"describe {probe.request.image_type}")
            if isinstance(probe, DescribeCall)
            else ("mask_model", f"mask model {probe.options.mask_model}")
        )
        raise ParamError(field, not_installed(what, missing))
    with queue_place(services):  # the same bound as generations, held from before the image is stored
        call = make_call(await store_tool_image(services, image))
        notes = ignored_note(ignored)
        queued = await enqueue(services, msgspec.to_builtins(call), stream=False, notes=notes, wire=wire)
    await queued.ended.wait()
    events = await anyio.to_thread.run_sync(lambda: list(services.event_log.read(task_id=queued.task_id)))
    return events[-1].event, queued.task_id


def _failure(event: Event, task_id: str, headers: dict[str, str]) -> Response[Any]:
    """A tool task that did not finish, as an HTTP answer naming why."""
    if isinstance(event, TaskFailed):
        status = 400 if event.error_type in _CLIENT_FAILURES else 501 if event.error_type == _NOT_INSTALLED else 500
        detail = event.message
    else:  # stopped or cancelled (POST /tasks/{id}/cancel) before it answered
        status, detail = 409, f"the tool task {task_id} ended without an answer ({type(event).__name__})"
    return Response({"status_code": status, "detail": detail}, status_code=status, headers=headers)


def _demo(services: Services) -> bool:
    """The demo preset's tools are its tiny generated models (as its checkpoint is)."""
    return services.preset_defaults.get("base_model_name") == DEMO_CHECKPOINT


def _describe_type(value: Any, field: str) -> DescribeType:
    if value is None or value == "":
        return "Photo"
    if value not in DESCRIBE_TYPES:
        raise ParamError(field, f"expected one of {', '.join(DESCRIBE_TYPES)}, got {value!r}")
    return value  # type: ignore[no-any-return]


async def _describe_input(request: Request) -> tuple[Any, DescribeType, list[str]]:
    """(image, type, ignored fields) from FooocusAPI's JSON or Fooocus-API's multipart form."""
    query = request.query_params
    if request.content_type[0] in FORM_TYPES:  # Fooocus-API: an `image` part; the type in `type` (v0.3) or `image_type`
        form = await request.form()
        image = await image_part(form.get("image"))
        field = next((name for name in ("image_type", "type") if form.get(name) or query.get(name)), "image_type")
        kind = _describe_type(form.get(field) or query.get(field), field)
        ignored = [key for key in form if key not in ("image", "image_type", "type")]
        return image, kind, ignored
    raw = await request.json() if await request.body() else None
    if not isinstance(raw, dict):
        raise ValidationException("body: expected a JSON object {image, image_type} or a multipart form")
    field = "type" if "image_type" not in raw and "type" in raw else "image_type"
    kind = _describe_type(raw.get(field) or query.get(field), field)
    ignored = [str(key) for key in raw if key not in ("image", "image_type", "type")]
    return raw.get("image"), kind, ignored


_DESCRIBE_BODY: Final = {
    "application/json": Schema(
        type=OpenAPIType.OBJECT,
        required=["image"],
        properties={
            "image": Schema(type=OpenAPIType.STRING, description="base64, a data: URI or an http(s) URL"),
            "image_type": Schema(type=OpenAPIType.STRING, enum=list(DESCRIBE_TYPES), default="Photo"),
        },
    ),
    "multipart/form-data": Schema(
        type=OpenAPIType.OBJECT,
        properties={"image": binary("The image file (Fooocus-API)"), "type": Schema(type=OpenAPIType.STRING)},
    ),
}


@post(
    "/describe-image",
    status_code=200,
    summary="Describe an image: a BLIP caption (Photo) or WD14 tags (Anime)",
    responses=examples.DESCRIBE_RESPONSES,
    description="FooocusAPI's JSON `{image, image_type}`, or Fooocus-API's multipart `image` file with the type in "
    "`type` or `image_type` (form or query). Runs on the runner as a task (listed by /tasks); seeded, so one image "
    "gives one text. Anime needs onnxruntime (the tools extra): without it, 501.",
    opt={FORMS_OPT: True},
    operation_class=operation(body=_DESCRIBE_BODY),
)
async def describe_image(request: Request, services: NamedDependency[Services]) -> Response[Any]:
    image, kind, ignored = await _describe_input(request)
    demo = _demo(services)

    def make_call(key: str) -> ToolCall:
        return DescribeCall(image=key, request=DescribeRequest(image_type=kind), demo=demo)

    event, task_id = await _run(services, image, make_call, "tools/describe-image", ignored)
    headers = {"X-Task-Id": task_id, **ignored_header(ignored)}
    if not isinstance(event, TaskFinished):
        return _failure(event, task_id, headers)
    return Response({"describe": event.text}, headers=headers)


@post(
    "/generate_mask",
    status_code=200,
    summary="A mask from rembg's models or GroundingDINO + SAM: a bare base64 PNG string",
    responses=examples.MASK_RESPONSES,
    description="FooocusAPI's GenerateMaskRequest. `sam` finds `dino_prompt_text` with GroundingDINO, then masks the "
    "boxes with SAM (holes under 400 px filled, the first `sam_max_detections` boxes, 0: all); `dino_debug` answers "
    "the boxes instead. The other models run on onnxruntime (the tools extra): without it, 501.",
)
async def generate_mask(
    request: Request, data: Annotated[GenerateMaskBody, Body()], services: NamedDependency[Services]
) -> Response[Any]:
    ignored = ignored_fields(await request.json(), GenerateMaskBody)
    options = MaskOptions(**{name: getattr(data, name) for name in MaskOptions.__struct_fields__})
    demo = _demo(services)

    def make_call(key: str) -> ToolCall:
        return MaskCall(image=key, options=options, demo=demo)

    event, task_id = await _run(services, data.image, make_call, "tools/generate_mask", ignored)
    headers = {"X-Task-Id": task_id, **ignored_header(ignored)}
    if not isinstance(event, TaskFinished) or not event.result:
        return _failure(event, task_id, headers)
    path = await anyio.to_thread.run_sync(services.data_path, event.result[0])
    encoded = base64.b64encode(await anyio.to_thread.run_sync(path.read_bytes)).decode("ascii")
    # A JSON string, no data: prefix (FastAPI's `-> str`); a plain str would go out as text/plain.
    return Response(msgspec.json.encode(encoded), media_type=MediaType.JSON, headers=headers)


def tools_router() -> Router:
    return Router(path="/v1/tools", tags=[TAG], route_handlers=[describe_image, generate_mask])
