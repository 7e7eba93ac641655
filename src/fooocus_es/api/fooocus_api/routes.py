"""The older Fooocus-API routes (mrhan1993/Fooocus-API, formerly konieshadow), over the same task log.

v1 text-to-image and every v2 route take JSON, as application/json or with no Content-Type (its
examples post `data=json.dumps(...)` with none); v1 image routes take multipart forms too (opt
forms, api/body_types.py). job_id is
the task_id: these jobs are /tasks' tasks, and every task (FooocusAPI's too) is a job here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Final

import anyio.to_thread
from litestar import MediaType, Request, Response, Router, get, post
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.openapi.spec import OpenAPIType, Schema
from litestar.params import Body, FromQuery, Parameter

from fooocus_es.api import engines
from fooocus_es.api.body_types import FORMS_OPT
from fooocus_es.api.fooocus_api import admit, examples, jobs
from fooocus_es.api.fooocus_api.kinds import RouteKind
from fooocus_es.api.fooocus_api.multipart import read_form
from fooocus_es.api.fooocus_api.responses import (
    JOB_NOT_FOUND,
    AsyncJobResponse,
    HistoryMessage,
    JobHistoryResponse,
    JobQueueInfo,
    StopResponse,
)
from fooocus_es.api.openapi_ops import binary, operation
from fooocus_es.api.tasks import MAX_PAGE

if TYPE_CHECKING:  # resolved through the signature namespace (api/deps.py)
    from fooocus_es.engine.models.store import ModelStore
    from fooocus_es.services import Services

TAG: Final = "fooocus-api (older)"
_FORM_TYPES: Final = ("multipart/form-data", "application/x-www-form-urlencoded")
_JSON_DOC: Final = (
    "Fooocus-API's CommonRequest plus the route's fields, as JSON (application/json or no Content-Type). It becomes an "
    "ordinary task (job_id = task_id): `advanced_params.*` go to the top level, `input_image` to `uov_input_image` "
    "or `inpaint_input_image`, `input_mask` to `inpaint_mask_image_upload`, `image_prompts` to `controlnet_image` "
    "(cn_stop/cn_weight 0 or null: the type's Fooocus default), `outpaint_distance_left/top/right/bottom` to "
    "`outpaint_distance`, `upscale_value` to `upscale_multiple`, `save_extension` to `output_format`, `save_meta` to "
    "`save_metadata_to_images`, `meta_scheme` to `metadata_scheme`; `save_name` is dropped. A model, LoRA, VAE or "
    "style that is not installed, an unknown sampler, scheduler or inpaint engine, and the docs placeholder "
    "webhook_url `string` fall back as upstream does, each named in the task's notes; unknown fields are ignored "
    "and listed in X-Ignored-Fields. A wrong value is a 400 naming the Fooocus-API field (a webhook_url must be "
    "http(s) with a host)."
)
_FORM_DOC: Final = (
    "multipart/form-data as python-requests builds it: CommonRequest fields as form fields (booleans True/False, "
    "`style_selections` and `outpaint_selections` comma-separated or repeated, `loras` and `advanced_params` as "
    "JSON strings; an unreadable advanced_params means the defaults), image files {files}, and for image prompts "
    "`cn_img1..4` files with `cn_stop1..4`, `cn_weight1..4`, `cn_type1..4` (0 or absent: the type's Fooocus "
    "default). Unknown fields are ignored and listed in X-Ignored-Fields. A JSON body is read as the v2 route's."
)


_PNG_TOO: Final = {"200": {"image/png": binary("`Accept: image/png` (or `?accept=image/png`): the first image")}}


def _generation(path: str, summary: str) -> Any:
    return post(
        path, status_code=200, summary=summary, responses=examples.GENERATE_RESPONSES, description=_JSON_DOC,
        operation_class=operation(content=_PNG_TOO),
    )  # fmt: skip


# The raw body: the mapping needs every key as sent (unknown ones are listed, tolerated values replaced).
JsonBody = dict[str, Any]


@_generation("/v1/generation/text-to-image", "Text to image (Fooocus-API v1, JSON)")
async def text_to_image(
    request: Request,
    data: Annotated[JsonBody, Body(examples=examples.TEXT_TO_IMAGE_BODIES)],
    services: NamedDependency[Services],
) -> Response[Any]:
    return await admit.submit(request, services, "text-to-image", data)


@_generation("/v2/generation/text-to-image-with-ip", "Text to image with image prompts (Fooocus-API v2)")
async def text_to_image_with_ip(
    request: Request,
    data: Annotated[JsonBody, Body(examples=examples.TEXT_TO_IMAGE_IP_BODIES)],
    services: NamedDependency[Services],
) -> Response[Any]:
    return await admit.submit(request, services, "text-to-image-with-ip", data)


@_generation("/v2/generation/image-upscale-vary", "Upscale or vary (Fooocus-API v2, JSON)")
async def upscale_vary_v2(
    request: Request,
    data: Annotated[JsonBody, Body(examples=examples.UPSCALE_VARY_BODIES)],
    services: NamedDependency[Services],
) -> Response[Any]:
    return await admit.submit(request, services, "upscale-vary", data)


@_generation("/v2/generation/image-inpaint-outpaint", "Inpaint or outpaint (Fooocus-API v2, JSON)")
async def inpaint_outpaint_v2(
    request: Request,
    data: Annotated[JsonBody, Body(examples=examples.INPAINT_OUTPAINT_BODIES)],
    services: NamedDependency[Services],
) -> Response[Any]:
    return await admit.submit(request, services, "inpaint-outpaint", data)


@_generation("/v2/generation/image-prompt", "Image prompt (Fooocus-API v2, JSON)")
async def image_prompt_v2(
    request: Request,
    data: Annotated[JsonBody, Body(examples=examples.IMAGE_PROMPT_BODIES)],
    services: NamedDependency[Services],
) -> Response[Any]:
    return await admit.submit(request, services, "image-prompt", data)


async def _submit_form(request: Request, services: Services, kind: RouteKind) -> Response[Any]:
    if request.content_type[0] not in _FORM_TYPES:  # a JSON body: read it as the v2 route would
        body = await request.json()  # api/json_body.py: malformed bytes are a 400 naming the problem
        if not isinstance(body, dict):
            raise ValidationException("body: expected a multipart form or a JSON object")
        return await admit.submit(request, services, kind, body)
    form = await read_form(await request.form())
    return await admit.submit(request, services, kind, form.body, form)


# The v1 form as documented: its image fields, each a file or a text value (base64 or a URL, as the JSON
# form takes), empty or absent meaning none (upstream answered 422 to a missing input_image). Every other
# CommonRequest field is a text field too (see the description).
_IMAGE_FIELD: Final = Schema(
    type=OpenAPIType.STRING, description="A png/jpeg/webp file, or base64 / an http(s) URL as text; empty: none"
)
_FORM_BODY: Final = {
    "multipart/form-data": Schema(
        type=OpenAPIType.OBJECT,
        properties={name: _IMAGE_FIELD for name in ("input_image", "input_mask", *(f"cn_img{i}" for i in range(1, 5)))},
    ),
    "application/json": Schema(type=OpenAPIType.OBJECT),
}


def _form_route(path: str, summary: str, files: str) -> Any:
    return post(
        path, status_code=200, summary=summary, responses=examples.GENERATE_RESPONSES,
        description=_FORM_DOC.format(files=files), opt={FORMS_OPT: True},
        operation_class=operation(content=_PNG_TOO, body=_FORM_BODY),
    )  # fmt: skip


@_form_route("/v1/generation/image-upscale-vary", "Upscale or vary (Fooocus-API v1, multipart)", "`input_image`")
async def upscale_vary_v1(request: Request, services: NamedDependency[Services]) -> Response[Any]:
    return await _submit_form(request, services, "upscale-vary")


@_form_route(
    "/v1/generation/image-inpaint-outpaint",
    "Inpaint or outpaint (Fooocus-API v1, multipart)",
    "`input_image` and `input_mask` (optional)",
)
async def inpaint_outpaint_v1(request: Request, services: NamedDependency[Services]) -> Response[Any]:
    return await _submit_form(request, services, "inpaint-outpaint")


@_form_route(
    "/v1/generation/image-prompt",
    "Image prompt (Fooocus-API v1, multipart)",
    "`input_image` and `input_mask` (both optional: inpaint with the image prompts)",
)
async def image_prompt_v1(request: Request, services: NamedDependency[Services]) -> Response[Any]:
    return await _submit_form(request, services, "image-prompt")


# -- jobs -----------------------------------------------------------------------------------------
@get(
    "/v1/generation/query-job",
    summary="One job: stage, progress, status text, step preview, result (Fooocus-API)",
    responses=examples.QUERY_JOB_RESPONSES,
    operation_class=operation(required=["job_id"]),  # optional in the signature only for the 400's message
)
async def query_job(
    services: NamedDependency[Services],
    job_id: FromQuery[str | None] = None,
    require_step_preview: Annotated[bool, Parameter(description="Also the live preview (bare base64)")] = False,
) -> Response[AsyncJobResponse]:
    if job_id is None:  # upstream answers 422; here the project's 400 naming the field
        raise ValidationException(
            "job_id: required (the job_id an async request returned)",
            extra=[{"key": "job_id", "message": "required", "source": "query"}],
        )
    found = await jobs.job(services, job_id, preview=require_step_preview)
    return Response(found) if found is not None else Response(JOB_NOT_FOUND, status_code=404)


@get(
    "/v1/generation/job-queue",
    summary="Queue size, ended jobs, the last job queued (Fooocus-API)",
    responses=examples.JOB_QUEUE_RESPONSES,
)
async def job_queue(services: NamedDependency[Services]) -> JobQueueInfo:
    return await jobs.queue_info(services)


@get(
    "/v1/generation/job-history",
    summary="Queued and ended jobs; delete=true&job_id= removes one (Fooocus-API)",
    responses=examples.JOB_HISTORY_RESPONSES,
)
async def job_history(
    services: NamedDependency[Services],
    job_id: FromQuery[str | None] = None,
    page: Annotated[int, Parameter(ge=0, le=MAX_PAGE)] = 0,
    page_size: Annotated[int, Parameter(ge=1, le=1000)] = 20,
    delete: FromQuery[bool] = False,
) -> JobHistoryResponse | HistoryMessage:
    if delete and job_id is not None:
        return HistoryMessage("Deleted" if await jobs.delete(services, job_id) else "Not found")
    return await jobs.history(services, job_id, page, page_size)


@post(
    "/v1/generation/stop",
    status_code=200,
    summary="Stop the running job; it ends as SUCCESS with the images made so far (Fooocus-API)",
    responses=examples.STOP_RESPONSES,
)
async def stop(services: NamedDependency[Services]) -> StopResponse:
    await services.control("stop")  # nothing running is fine: upstream answers success either way
    return StopResponse()


@post(
    "/v1/engines/refresh-models",
    status_code=200,
    summary="Model files on disk, read again (Fooocus-API v0.3; same as GET /v1/engines/all-models)",
    responses=examples.MODELS_RESPONSES,
)
async def refresh_models(model_store: NamedDependency[ModelStore]) -> dict[str, list[str]]:
    return await anyio.to_thread.run_sync(engines.model_files, model_store)


@get("/ping", summary="Liveness: pong (Fooocus-API)", media_type=MediaType.TEXT, responses=examples.PING_RESPONSES)
async def ping() -> str:
    return "pong"


FOOOCUS_API_ROUTES: Final = [
    text_to_image,
    text_to_image_with_ip,
    upscale_vary_v2,
    inpaint_outpaint_v2,
    image_prompt_v2,
    upscale_vary_v1,
    inpaint_outpaint_v1,
    image_prompt_v1,
    query_job,
    job_queue,
    job_history,
    stop,
    refresh_models,
    ping,
]


def fooocus_api_router() -> Router:
    """Every older-wire route under one tag; their paths share no prefix (/v1/generation, /v2, /ping, ...)."""
    return Router(path="/", tags=[TAG], route_handlers=FOOOCUS_API_ROUTES)
