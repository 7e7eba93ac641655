"""OpenAI-compatible images API: /v1/images/generations, /v1/images/edits, /v1/models.

A view over the same machinery as the native API, not a second one: the request is mapped onto
FooocusAPI parameters, resolved with `generate.resolve_request` and checked with
`plan.validate_names`, and becomes ONE task (image_number = n) in the same event log, so it shows
in /tasks, its history, its events and webhooks like any other task.

| OpenAI field       | FooocusAPI parameter                                                          |
|--------------------|-------------------------------------------------------------------------------|
| prompt             | prompt                                                                        |
| n (1..10)          | image_number                                                                  |
| size "WxH"         | aspect_ratios_selection "W*H"; "auto"/absent: the preset's (edits: the image's) |
| quality            | performance_selection: low -> Lightning; medium, standard -> Speed;           |
|                    | high, hd, xhigh, max -> Quality; auto/absent -> the preset's (Speed in both   |
|                    | bundled presets)                                                              |
| style              | style_selections: vivid -> Fooocus V2 + Enhance + Sharp; natural -> Fooocus   |
|                    | V2 + Photograph                                                               |
| model              | base_model_name when it names a checkpoint on disk, else ignored              |
| output_format      | output_format (png, jpeg, webp)                                               |
| response_format    | url (default; signed when an API key is set) or b64_json                      |
| user               | logged with the request, not stored                                           |
| extra_body         | negative_prompt, seed -> image_seed, steps -> overwrite_step, guidance_scale, |
|                    | and any other native GenerateRequest field except the return-mode ones        |
| edits: image, mask | inpaint_input_image, inpaint_mask_image_upload (alpha 0 in the OpenAI mask -> |
|                    | white, i.e. the area to repaint); no mask: the image's own transparency       |

Errors on these routes have OpenAI's shape `{"error": {message, type, param, code}}` (exception
handlers on this module's router, so the native routes keep theirs). Every answer carries `X-Task-Id`.
"""

from __future__ import annotations

import base64
import io
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

import anyio
import anyio.to_thread
import msgspec
import structlog
from litestar import Request, Response, Router, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example, OpenAPIType, Reference, Schema
from litestar.params import Body, FromPath
from litestar.response import Stream
from msgspec import Meta, Struct
from PIL import Image

from fooocus_es.api.admission import Admitted, enqueue, queue_place, validate_and_store
from fooocus_es.api.body_types import FORMS_OPT
from fooocus_es.api.cross_site import CrossSiteRefused
from fooocus_es.api.errors import NotFound
from fooocus_es.api.generate import resolve_request
from fooocus_es.api.openapi_ops import binary, operation, sse_events
from fooocus_es.api.structs import GenerateRequest, sent_fields
from fooocus_es.engine.planning import aspect, performance
from fooocus_es.engine.planning import plan as planning
from fooocus_es.engine.planning.plan import ParamError
from fooocus_es.events.types import TaskProgress, is_terminal
from fooocus_es.media.decode import ALLOWED_FORMATS, decode_image_bytes
from fooocus_es.media.errors import InputImageError
from fooocus_es.media.limits import ImageLimits

if TYPE_CHECKING:  # resolved through the signature namespace (api/deps.py)
    from fooocus_es.engine.models.store import ModelStore
    from fooocus_es.services import Services

log = structlog.get_logger("fooocus_es.openai")

Quality = Literal["low", "medium", "high", "auto", "standard", "hd", "xhigh", "max"]

QUALITY_PERFORMANCE: Final[dict[str, str | None]] = {
    "low": "Lightning",
    "medium": "Speed",
    "standard": "Speed",
    "high": "Quality",
    "hd": "Quality",
    "xhigh": "Quality",
    "max": "Quality",
    "auto": None,  # the server preset's performance
}
# What the stream events echo (the SDK's Literal has no standard/hd).
QUALITY_ECHO: Final[dict[str, str]] = {"standard": "medium", "hd": "high"}
STYLE_SELECTIONS: Final[dict[str, list[str]]] = {
    "vivid": ["Fooocus V2", "Fooocus Enhance", "Fooocus Sharp"],
    "natural": ["Fooocus V2", "Fooocus Photograph"],
}
# Native fields a client may add through extra_body. The return mode and the fields this API
# maps itself are not among them.
_NOT_PASSED_THROUGH: Final = frozenset(
    {"prompt", "image_number", "output_format", "negative_prompt", "guidance_scale", "stream_output",
     "async_process", "require_base64"}
)  # fmt: skip
_SIZE = re.compile(r"^\s*(\d{1,5})\s*[xX×*]\s*(\d{1,5})\s*$")
_PATH_PARAM = re.compile(r"at `\$\.([A-Za-z0-9_]+)")
_BACKTICKED = re.compile(r"`([A-Za-z0-9_]+)`")
_NO_RETRY: Final = {"x-should-retry": "false"}  # the openai client would otherwise resubmit the task


class ImageGenerationRequest(Struct, kw_only=True):
    """POST /v1/images/generations. Unknown fields are ignored: newer SDKs add fields."""

    prompt: Annotated[str, Meta(max_length=32000)]
    n: Annotated[int, Meta(ge=1, le=10, description="Images in the task (image_number). Default 1.")] | None = None
    size: Annotated[str, Meta(max_length=32, description="'WxH' (64..4096 a side) or 'auto' (preset's).")] | None = None
    response_format: Literal["url", "b64_json"] | None = None
    quality: (
        Annotated[Quality, Meta(description="low: Lightning, medium/standard: Speed, high/hd: Quality.")] | None
    ) = None
    style: Annotated[Literal["vivid", "natural"], Meta(description="Fooocus style sets.")] | None = None
    user: Annotated[str, Meta(max_length=256)] | None = None
    model: Annotated[str, Meta(max_length=255, description="A checkpoint on disk; other names are ignored.")] | None = (
        None
    )
    output_format: Literal["png", "jpeg", "webp"] | None = None
    stream: bool | None = None
    partial_images: (
        Annotated[int, Meta(ge=0, le=3, description="Previews per image when streaming. Default 1.")] | None
    ) = None
    # extra_body
    negative_prompt: Annotated[str, Meta(max_length=20000)] | None = None
    seed: Annotated[int, Meta(ge=-1, le=planning.MAX_SEED, description="-1: random.")] | None = None
    steps: Annotated[int, Meta(ge=1, le=200)] | None = None
    guidance_scale: Annotated[float, Meta(ge=1.0, le=30.0)] | None = None


class OpenAIError(Exception):
    status_code = 400  # read off the class by Litestar's exception logging: no traceback for a 4xx

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status


# -- errors in OpenAI's shape (only on these routes) --------------------------------------------------
def _error(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response[dict[str, Any]]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return Response(body, status_code=status, headers=headers)


def _on_openai_error(_: Request, exc: OpenAIError) -> Response[dict[str, Any]]:
    return _error(
        exc.status, exc.message, param=exc.param, code=exc.code, headers=_NO_RETRY if exc.status >= 500 else None
    )


def _on_validation(_: Request, exc: ValidationException) -> Response[dict[str, Any]]:
    extra = exc.extra if isinstance(exc.extra, list) else []
    first = extra[0] if extra and isinstance(extra[0], dict) else {}
    message = str(first.get("message") or exc.detail)
    param = first.get("key")
    if param in (None, "data"):  # missing/unknown fields report key "data"; the message names them
        found = _BACKTICKED.search(message)
        param = found.group(1) if found else None
    return _error(400, f"{param}: {message}" if param else message, param=param)


def _on_param_error(_: Request, exc: ParamError) -> Response[dict[str, Any]]:
    return _error(400, str(exc), param=exc.field)


def _on_input_image(_: Request, exc: InputImageError) -> Response[dict[str, Any]]:
    retry = {"Retry-After": "10"} if exc.status_code == 429 else None  # the decode budget's 413/429
    return _error(exc.status_code, str(exc), param=exc.field, headers=retry)


_HTTP_CODES: Final = {401: "missing_api_key", 403: "invalid_api_key", 404: "not_found", 413: "request_too_large",
                      415: "unsupported_media_type", 421: "misdirected_request", 429: "queue_full",
                      503: "storage_unavailable", 507: "storage_full"}  # fmt: skip


def _on_http(_: Request, exc: HTTPException) -> Response[dict[str, Any]]:
    code = "cross_site_request" if isinstance(exc, CrossSiteRefused) else _HTTP_CODES.get(exc.status_code)
    return _error(exc.status_code, exc.detail, code=code, headers=exc.headers)


def _on_internal(_: Request, exc: Exception) -> Response[dict[str, Any]]:
    return _error(500, "Internal Server Error", headers=_NO_RETRY)


EXCEPTION_HANDLERS: Final[dict[Any, Callable[..., Response[Any]]]] = {
    OpenAIError: _on_openai_error,
    ValidationException: _on_validation,
    ParamError: _on_param_error,
    InputImageError: _on_input_image,
    HTTPException: _on_http,
    500: _on_internal,
}


def _convert_error(exc: msgspec.ValidationError) -> OpenAIError:
    message = str(exc)
    found = _PATH_PARAM.search(message) or _BACKTICKED.search(message)
    param = found.group(1) if found else None
    return OpenAIError(f"{param}: {message}" if param else message, param=param)


# -- request -> FooocusAPI parameters -----------------------------------------------------------------
@dataclass
class _Ask:
    """What the answer needs besides the task: how to return images and what to echo."""

    response_format: str
    quality: str
    stream: bool
    partial_images: int
    event_prefix: str  # image_generation | image_edit


def parse_size(value: str) -> str:
    """'WxH' -> 'W*H' (the native form); raises OpenAIError naming size."""
    match = _SIZE.match(value)
    if not match:
        raise OpenAIError(f"size: expected 'WxH' such as '1024x1024', or 'auto'; got {value!r}", param="size")
    native = f"{match.group(1)}*{match.group(2)}"
    try:
        aspect.parse_aspect_ratio(native)
    except aspect.AspectRatioError as exc:
        raise OpenAIError(f"size: {exc}".replace(native, value), param="size") from exc
    return native


def map_request(request: ImageGenerationRequest, checkpoints: set[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The native fields an OpenAI request sets, and native field -> OpenAI param (for errors)."""
    sent: dict[str, Any] = {"prompt": request.prompt}
    origin: dict[str, str] = {"prompt": "prompt"}

    def put(native: str, value: Any, param: str) -> None:
        sent[native] = value
        origin[native] = param

    if request.n is not None:
        put("image_number", request.n, "n")
    if request.size is not None and request.size.strip().lower() != "auto":
        put("aspect_ratios_selection", parse_size(request.size), "size")
    if request.quality is not None and QUALITY_PERFORMANCE[request.quality] is not None:
        put("performance_selection", QUALITY_PERFORMANCE[request.quality], "quality")
    if request.style is not None:
        put("style_selections", list(STYLE_SELECTIONS[request.style]), "style")
    if request.model is not None and request.model in checkpoints:
        put("base_model_name", request.model, "model")
    if request.output_format is not None:
        put("output_format", request.output_format, "output_format")
    if request.negative_prompt is not None:
        put("negative_prompt", request.negative_prompt, "negative_prompt")
    if request.seed is not None:
        put("image_seed", request.seed, "seed")
    if request.steps is not None:
        put("overwrite_step", request.steps, "steps")
    if request.guidance_scale is not None:
        put("guidance_scale", request.guidance_scale, "guidance_scale")
    return sent, origin


def native_extras(raw: dict[str, Any]) -> dict[str, Any]:
    """extra_body keys that are native GenerateRequest fields, checked by the native struct."""
    fields = (
        set(GenerateRequest.__struct_fields__) - _NOT_PASSED_THROUGH - set(ImageGenerationRequest.__struct_fields__)
    )
    picked = {key: value for key, value in raw.items() if key in fields}
    if not picked:
        return {}
    try:
        return sent_fields(msgspec.convert(picked, GenerateRequest))
    except msgspec.ValidationError as exc:
        raise _convert_error(exc) from exc


def _ask(request: ImageGenerationRequest, event_prefix: str) -> _Ask:
    quality = request.quality or "auto"
    return _Ask(
        response_format=request.response_format or "url",
        quality=QUALITY_ECHO.get(quality, quality),
        stream=bool(request.stream),
        partial_images=1 if request.partial_images is None else request.partial_images,
        event_prefix=event_prefix,
    )


async def _checkpoints(model_store: ModelStore) -> set[str]:
    return set(await anyio.to_thread.run_sync(model_store.list_checkpoints))


async def _enqueue(services: Services, sent: dict[str, Any], origin: dict[str, str], *, stream: bool) -> Admitted:
    """The native path (api/admission.py), with errors renamed to the OpenAI field they came from."""
    with queue_place(services):  # taken before any await: the bound holds under a burst
        try:
            params = await validate_and_store(services, resolve_request(services, sent), sent)
        except (ParamError, InputImageError) as exc:
            root = re.split(r"[.\[]", exc.field, maxsplit=1)[0]
            param = origin.get(root)
            if param is None:
                raise
            status = exc.status_code if isinstance(exc, InputImageError) else 400  # 413/429: the decode budget
            raise OpenAIError(f"{param}: {exc.message}", param=param, status=status) from exc
        return await enqueue(services, params, stream=stream, wire="openai")


# -- answers -------------------------------------------------------------------------------------------
def _size_text(params: dict[str, Any]) -> str:
    width, height = aspect.resolve_size(
        params["aspect_ratios_selection"], params["overwrite_width"], params["overwrite_height"]
    )
    return f"{width}x{height}"


def _read_b64(services: Services, paths: list[str]) -> list[str]:
    return [base64.b64encode(services.data_path(path).read_bytes()).decode("ascii") for path in paths]


def _task_error(task_id: str, stored: dict[str, Any] | None) -> OpenAIError:
    stored = stored or {}
    error = stored.get("error") or {}
    status = stored.get("task_status")
    if error:
        return OpenAIError(f"task {task_id} failed: {error.get('message')}", code=error.get("type"), status=500)
    return OpenAIError(f"task {task_id} ended as {status!r} without images", code=f"task_{status}", status=409)


async def _answer(request: Request, services: Services, queued: Admitted, ask: _Ask) -> Response[Any]:
    headers = {"X-Task-Id": queued.task_id}
    if ask.stream:
        assert queued.subscription is not None
        return Stream(
            _stream(services, queued, ask),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers},
        )
    await queued.ended.wait()
    stored = await services.stored_record(queued.task_id)
    result = (stored or {}).get("result") or []
    if not result:
        error = _task_error(queued.task_id, stored)
        return _error(error.status, error.message, code=error.code, headers={**headers, **_NO_RETRY})
    if ask.response_format == "b64_json":
        encoded = await anyio.to_thread.run_sync(_read_b64, services, result)
        data = [{"b64_json": item, "revised_prompt": None} for item in encoded]
    else:
        data = [{"url": services.signer.url(path), "revised_prompt": None} for path in result]
    body = {
        "created": queued.at_ms // 1000,
        "data": data,
        "background": "opaque",
        "output_format": queued.params["output_format"],
        "quality": ask.quality,
        "size": _size_text(queued.params),
    }
    return Response(body, headers=headers)


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"


def partial_steps(steps: int, partial_images: int) -> list[int]:
    """The sampling steps after which a partial image is sent: evenly spread, never the last (of two or more)."""
    return [max(1, min(steps - 1, round(steps * (i + 1) / (partial_images + 1)))) for i in range(partial_images)]


class PartialImages:
    """Picks each image's partial images out of its progress events, at the `partial_steps` thresholds.

    The runner paces previews (--stream-rate), so the threshold step may carry none: then the image's
    latest preview so far is its partial image. A preview is sent once at most.
    """

    def __init__(self, thresholds: list[int]) -> None:
        self.thresholds = thresholds
        self._sent: dict[int, int] = {}  # image index -> partial images sent
        self._latest: dict[int, str] = {}  # image index -> newest unsent preview (a data URL)

    def offer(self, event: TaskProgress) -> str | None:
        """The preview to send as a partial image after this event, or None."""
        if event.stage != "sampling" or not self.thresholds:
            return None
        image = event.image_index
        if event.preview:
            self._latest[image] = event.preview
        count = self._sent.get(image, 0)
        if image not in self._latest or count >= len(self.thresholds) or event.step < self.thresholds[count]:
            return None
        self._sent[image] = count + 1
        return self._latest.pop(image)


async def _stream(services: Services, queued: Admitted, ask: _Ask) -> AsyncIterator[bytes]:
    """OpenAI's image stream: partial images from the live previews, then one completed event per image.

    A client that goes away only ends this generator; the task runs on and is recorded.
    """
    subscription, params = queued.subscription, queued.params
    assert subscription is not None
    common = {"background": "opaque", "quality": ask.quality, "size": _size_text(params)}
    steps = performance.steps_for(params["performance_selection"], params["overwrite_step"])
    thresholds = partial_steps(steps, ask.partial_images)
    partials = PartialImages(thresholds)
    index = 0
    try:
        async with subscription.receive:
            async for envelope in subscription.receive:
                event = envelope.event
                if isinstance(event, TaskProgress):
                    preview = partials.offer(event)
                    if preview is None:
                        continue
                    yield _sse(
                        f"{ask.event_prefix}.partial_image",
                        {"type": f"{ask.event_prefix}.partial_image", "b64_json": preview.partition(",")[2],
                         "created_at": event.at_ms // 1000, "output_format": "jpeg", "partial_image_index": index,
                         **common},
                    )  # fmt: skip
                    index += 1
                elif is_terminal(event):
                    break
        await queued.ended.wait()  # normal end, or cut off for lagging: the waiter tells when it ended
        stored = await services.stored_record(queued.task_id)
        result = (stored or {}).get("result") or []
        if not result:
            error = _task_error(queued.task_id, stored)
            body = {"message": error.message, "type": "server_error", "param": None, "code": error.code}
            yield _sse("error", {"type": "error", "error": body})
            return
        encoded = await anyio.to_thread.run_sync(_read_b64, services, result)
        usage = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
                 "input_tokens_details": {"image_tokens": 0, "text_tokens": 0}}  # fmt: skip
        for item in encoded:
            yield _sse(
                f"{ask.event_prefix}.completed",
                {"type": f"{ask.event_prefix}.completed", "b64_json": item, "created_at": int(time.time()),
                 "output_format": params["output_format"], "usage": usage, **common},
            )  # fmt: skip
    finally:
        services.bus.unsubscribe(subscription)
        services.waiters.discard(queued.task_id)


def _bind_user(user: str | None) -> None:
    if user:
        structlog.contextvars.bind_contextvars(openai_user=user)


# -- OpenAPI examples ----------------------------------------------------------------------------------
_URL = "http://127.0.0.1:7866/outputs/2026-11-26/2026-11-26_17-36-09_5201.png"
_ERROR_400 = {"error": {"message": "size: expected 'WxH' such as '1024x1024', or 'auto'; got 'big'",
                        "type": "invalid_request_error", "param": "size", "code": None}}  # fmt: skip
GENERATION_BODIES = [
    Example(summary="url", value={"prompt": "a lighthouse at dusk", "size": "1024x1024", "quality": "low"}),
    Example(summary="two images, base64", value={"prompt": "a red fox", "n": 2, "response_format": "b64_json"}),
    Example(summary="stream with a partial image", value={"prompt": "a fox", "stream": True, "partial_images": 1}),
    Example(
        summary="extra_body fields",
        value={"prompt": "a fox", "negative_prompt": "blurry", "seed": 42, "steps": 20, "guidance_scale": 5.0},
    ),
]


def _responses(ok: Example, description: str) -> dict[int, ResponseSpec]:
    return {
        200: ResponseSpec(
            data_container=dict[str, Any], generate_examples=False, description=description, examples=[ok]
        ),
        400: ResponseSpec(
            data_container=dict[str, Any],
            generate_examples=False,
            description="OpenAI-shaped error",
            examples=[Example(value=_ERROR_400)],
        ),  # fmt: skip
    }


IMAGES_RESPONSES = _responses(
    Example(
        summary="url",
        value={
            "created": 1764178568,
            "data": [{"url": _URL, "revised_prompt": None}],
            "background": "opaque",
            "output_format": "png",
            "quality": "low",
            "size": "1024x1024",
        },
    ),  # fmt: skip
    "ImagesResponse; with stream=true a text/event-stream of *.partial_image and *.completed events. "
    "X-Task-Id names the task.",
)
MODELS_RESPONSES = _responses(
    Example(
        value={
            "object": "list",
            "data": [
                {"id": "fooocus_es_demo.safetensors", "object": "model", "created": 1764178568, "owned_by": "local"}
            ],
        }
    ),  # fmt: skip
    "Checkpoints on disk",
)
MODEL_RESPONSES = {
    **_responses(
        Example(
            value={"id": "fooocus_es_demo.safetensors", "object": "model", "created": 1764178568, "owned_by": "local"}
        ),
        "One checkpoint",
    ),
    404: ResponseSpec(
        data_container=dict[str, Any],
        generate_examples=False,
        description="No checkpoint of that name (OpenAI-shaped error, code not_found)",
        examples=[
            Example(
                value={
                    "error": {"message": "model: no checkpoint 'x'", "type": "invalid_request_error", "param": None,
                              "code": "not_found"}
                }  # fmt: skip
            )
        ],
    ),
}


# -- routes --------------------------------------------------------------------------------------------
_STREAM_TOO: Final = {"200": {"text/event-stream": sse_events("stream: *.partial_image and *.completed events")}}
_EDIT_FORM: Final = Schema(
    all_of=[
        Reference("#/components/schemas/ImageGenerationRequest"),
        Schema(
            type=OpenAPIType.OBJECT,
            properties={"image": binary("png, jpeg or webp"), "mask": binary("alpha 0 = repaint")},
            required=["image"],
        ),
    ]
)


@post(
    "/images/generations",
    status_code=200,
    summary="Create images (OpenAI-compatible)",
    responses=IMAGES_RESPONSES,
    operation_class=operation(content=_STREAM_TOO),
)
async def generations(
    request: Request,
    data: Annotated[ImageGenerationRequest, Body(examples=GENERATION_BODIES)],
    services: NamedDependency[Services],
) -> Response[Any]:
    _bind_user(data.user)
    raw = await request.json()  # already decoded (and checked) for `data`
    sent = native_extras(raw) if isinstance(raw, dict) else {}
    checkpoints = await _checkpoints(services.model_store)
    mapped, origin = map_request(data, checkpoints)
    sent.update(mapped)
    queued = await _enqueue(services, sent, origin, stream=bool(data.stream))
    return await _answer(request, services, queued, _ask(data, "image_generation"))


def _form_fields(form: Any) -> dict[str, Any]:
    """The text fields of the form (first value of each), as the struct's field names."""
    fields: dict[str, Any] = {}
    for key, value in form.multi_items():
        if isinstance(value, str) and key not in fields:
            fields[key] = value
    return fields


async def _upload(form: Any, name: str) -> bytes | None:
    for key in (name, f"{name}[]"):
        for value in form.getall(key, []):
            if isinstance(value, UploadFile):
                return await value.read()
            if isinstance(value, str) and value:
                raise OpenAIError(f"{name}: expected a file upload", param=name)
    return None


def _alpha(data: bytes, field: str, limits: ImageLimits) -> tuple[Image.Image, Image.Image | None]:
    """The checked image, and its alpha channel when it has one (None otherwise)."""
    checked = decode_image_bytes(data, field=field, limits=limits)  # limits, format, truncation
    if checked.mode == "RGBA":
        return checked, checked.getchannel("A")
    with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as img:  # LA, P + tRNS: decode drops those
        if "A" in img.getbands() or "transparency" in img.info:
            return checked, img.convert("RGBA").getchannel("A")
    return checked, None


def openai_mask_to_fooocus(alpha: Image.Image) -> bytes:
    """OpenAI masks are transparent where to edit; Fooocus's are white where to repaint."""
    mask = alpha.point(lambda value: 255 - value).convert("L")
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


def _data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")  # the real format is sniffed


def prepare_edit(image: bytes, mask: bytes | None, limits: ImageLimits) -> tuple[dict[str, Any], tuple[int, int]]:
    """Blocking: the inpaint fields for an OpenAI edit, and the input image's size."""
    checked, image_alpha = _alpha(image, "image", limits)
    fields = {"inpaint_input_image": _data_uri(image)}
    if mask is not None:
        mask_image, mask_alpha = _alpha(mask, "mask", limits)
        if mask_image.size != checked.size:
            raise OpenAIError(
                f"mask: is {mask_image.size[0]}x{mask_image.size[1]}, the image {checked.size[0]}x{checked.size[1]}; "
                "they must be the same size",
                param="mask",
            )
        if mask_alpha is None:  # no alpha channel: read it as a Fooocus mask already (white = repaint)
            fields["inpaint_mask_image_upload"] = _data_uri(mask)
        else:
            fields["inpaint_mask_image_upload"] = _data_uri(openai_mask_to_fooocus(mask_alpha))
    elif image_alpha is not None and image_alpha.getextrema()[0] < 255:
        fields["inpaint_mask_image_upload"] = _data_uri(openai_mask_to_fooocus(image_alpha))
    return fields, checked.size


@post(
    "/images/edits",
    status_code=200,
    summary="Edit an image: inpaint task (OpenAI-compatible, multipart: image, mask, prompt, n, size, ...)",
    responses=IMAGES_RESPONSES,
    opt={FORMS_OPT: True},
    operation_class=operation(content=_STREAM_TOO, body={"multipart/form-data": _EDIT_FORM}),
)
async def edits(request: Request, services: NamedDependency[Services]) -> Response[Any]:
    form = await request.form()
    try:
        data = msgspec.convert(_form_fields(form), ImageGenerationRequest, strict=False)
    except msgspec.ValidationError as exc:
        raise _convert_error(exc) from exc
    _bind_user(data.user)
    image = await _upload(form, "image")
    if image is None:
        raise OpenAIError("image: a file upload is required", param="image")
    mask = await _upload(form, "mask")
    limits = ImageLimits(allow_private_fetch=services.settings.allow_private_fetch)
    fields, (width, height) = await anyio.to_thread.run_sync(prepare_edit, image, mask, limits)
    sent: dict[str, Any] = {}  # form values are plain strings: no native pass-through here
    checkpoints = await _checkpoints(services.model_store)
    mapped, origin = map_request(data, checkpoints)
    sent.update(mapped)
    sent.update(fields)
    origin.update({"inpaint_input_image": "image", "inpaint_mask_image_upload": "mask"})
    sent["inpaint_engine"] = await anyio.to_thread.run_sync(_edit_inpaint_engine, services)
    if "aspect_ratios_selection" not in sent:  # the result has the input's size, as an edit should
        try:
            sent["aspect_ratios_selection"] = f"{width}*{height}"
            aspect.parse_aspect_ratio(sent["aspect_ratios_selection"])
        except aspect.AspectRatioError:
            del sent["aspect_ratios_selection"]  # outside 64..4096: the preset's size
    queued = await _enqueue(services, sent, origin, stream=bool(data.stream))
    return await _answer(request, services, queued, _ask(data, "image_edit"))


def _edit_inpaint_engine(services: Services) -> str:
    """The preset's inpaint engine when its Fooocus patch files are installed, else the base model alone.

    OpenAI clients cannot choose an engine, so an edit must not fail on files nobody asked for.
    """
    engine = str(services.preset_defaults.get("inpaint_engine", planning.REQUEST_DEFAULTS["inpaint_engine"]))
    folder = services.settings.models_dir / planning.INPAINT_DIR
    needed = planning.INPAINT_ENGINE_FILES.get(engine, ())
    return engine if all((folder / name).is_file() for name in needed) else "None"


class Model(Struct):
    id: str
    created: int
    object: str = "model"
    owned_by: str = "local"


class ModelList(Struct):
    data: list[Model]
    object: str = "list"


def _scan_models(model_store: ModelStore) -> list[Model]:
    folder = model_store.folder("checkpoints")
    models = []
    for name in model_store.list_checkpoints():
        try:
            created = int((folder / name).stat().st_mtime)
        except OSError:
            continue
        models.append(Model(id=name, created=created))
    return models


@get("/models", summary="Checkpoints on disk (OpenAI-compatible)", responses=MODELS_RESPONSES)
async def list_models(model_store: NamedDependency[ModelStore]) -> ModelList:
    return ModelList(data=await anyio.to_thread.run_sync(_scan_models, model_store))


@get("/models/{model_id:str}", summary="One checkpoint (OpenAI-compatible)", responses=MODEL_RESPONSES)
async def get_model(model_id: FromPath[str], model_store: NamedDependency[ModelStore]) -> Model:
    for model in await anyio.to_thread.run_sync(_scan_models, model_store):
        if model.id == model_id:
            return model
    raise NotFound(f"model: no checkpoint {model_id!r}")


def openai_router() -> Router:
    """/v1/images/* and /v1/models*: one tag, and OpenAI-shaped errors instead of the app's."""
    return Router(
        path="/v1",
        tags=["openai"],
        exception_handlers=EXCEPTION_HANDLERS,
        route_handlers=[generations, edits, list_models, get_model],
    )
