"""OpenAPI examples for the older Fooocus-API routes (the bodies of its examples_v1.py / examples_v2.py)."""

from __future__ import annotations

from typing import Any, Final

from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example

from fooocus_es.api.fooocus_api.responses import (
    AsyncJobResponse,
    GeneratedImageResult,
    HistoryMessage,
    JobHistoryResponse,
    JobQueueInfo,
    StopResponse,
)

_JOB_ID = "85c10c81e9e2482d90a64c3704137d3a"
_URL = "http://127.0.0.1:7866/outputs/2026-11-26/2026-11-26_17-36-09_5201.png"
_RESULT = {"base64": None, "url": _URL, "seed": "1234", "finish_reason": "SUCCESS"}
_WAITING = {"job_id": _JOB_ID, "job_type": "Text to Image", "job_stage": "WAITING", "job_progress": 0,
            "job_status": None, "job_step_preview": None, "job_result": None}  # fmt: skip
_RUNNING = {**_WAITING, "job_stage": "RUNNING", "job_progress": 42,
            "job_status": "Sampling step 2/4, image 1/1 ...", "job_step_preview": "/9j/4AAQSkZJRg..."}  # fmt: skip
_SUCCESS = {**_WAITING, "job_stage": "SUCCESS", "job_progress": 100, "job_status": "Finished", "job_result": [_RESULT]}
_NOT_FOUND = {"job_id": "", "job_type": "Not Found", "job_stage": "ERROR", "job_progress": 0,
              "job_status": "Job not found", "job_step_preview": None, "job_result": None}  # fmt: skip
_ERROR_400 = {"status_code": 400, "detail": "advanced_params.overwrite_step: Expected `int`, got `str`",
              "field": "advanced_params.overwrite_step"}  # fmt: skip
# Real 64x64 PNGs, so that "Try it out" and the fuzz's example phase send images that decode (an
# image field also takes bare base64 or an http(s) URL).
_IMAGE = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAEAAAABACAIAAAAlC+aJAAAAUUlEQVR42u3PMQ0AMAgAMJhqRCACqVPBQdI6aFZPXPbiOAEB"
    "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAYF9H2slAiTmkOmfAAAAAElFTkSuQmCC"
)
_MASK = (  # white square in the middle: the part to repaint
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAEAAAABACAAAAACPAi4CAAAAM0lEQVR42u3OIQ4AMAgEQej//1xEU4MjNRUz8hI2RAAc2Yc9PFiv"
    "HwgICAgICAj8FgC4CjPiAUBwf1GKAAAAAElFTkSuQmCC"
)


def _spec(container: Any, description: str, *values: Any) -> ResponseSpec:
    return ResponseSpec(
        data_container=container,
        generate_examples=False,
        description=description,
        examples=[Example(value=value) for value in values],
    )


GENERATE_RESPONSES: Final = {
    200: _spec(
        list[GeneratedImageResult] | AsyncJobResponse,
        "Blocking: the list of GeneratedImageResult (`[]` when the job failed); async_process: the "
        "AsyncJobResponse at once; `Accept: image/png` or `?accept=image/png`: the first image's PNG bytes. "
        "X-Task-Id names the task (job_id = task_id); X-Ignored-Fields lists fields this server does not know.",
        [_RESULT],
        _WAITING,
    ),
    400: _spec(dict[str, Any], "A wrong value, named by its Fooocus-API field", _ERROR_400),
}
TEXT_TO_IMAGE_BODIES: Final = [
    Example(
        summary="examples_v1: text to image, async",
        value={
            "prompt": "a cat",
            "performance_selection": "Lightning",
            "aspect_ratios_selection": "896*1152",
            "async_process": True,
        },
    ),
    Example(
        summary="with advanced_params",
        value={
            "prompt": "a lighthouse at dusk",
            "image_number": 2,
            "image_seed": 1234,
            "require_base64": True,
            "loras": [{"model_name": "sd_xl_offset_example-lora_1.0.safetensors", "weight": 0.1}],
            "advanced_params": {"sampler_name": "euler_ancestral", "scheduler_name": "normal", "overwrite_step": 20},
            "save_extension": "jpeg",
        },
    ),
]
TEXT_TO_IMAGE_IP_BODIES: Final = [
    Example(
        summary="examples_v2: text to image with image prompts",
        value={
            "prompt": "a cat",
            "performance_selection": "Speed",
            "image_prompts": [{"cn_img": _IMAGE, "cn_stop": 0.6, "cn_weight": 0.8, "cn_type": "ImagePrompt"}],
        },
    )
]
UPSCALE_VARY_BODIES: Final = [
    Example(
        summary="examples_v2: upscale",
        value={"input_image": _IMAGE, "uov_method": "Upscale (Custom)", "upscale_value": 3, "async_process": True},
    ),
    Example(summary="vary", value={"input_image": _IMAGE, "uov_method": "Vary (Strong)", "prompt": "a cat"}),
]
INPAINT_OUTPAINT_BODIES: Final = [
    Example(
        summary="examples_v2: inpaint and outpaint",
        value={
            "prompt": "a cat",
            "input_image": _IMAGE,
            "input_mask": _MASK,
            "inpaint_additional_prompt": "a hat",
            "outpaint_selections": ["Left", "Right"],
        },
    )
]
IMAGE_PROMPT_BODIES: Final = [
    Example(
        summary="examples_v2: face swap",
        value={
            "performance_selection": "Speed",
            "aspect_ratios_selection": "896*1152",
            "image_prompts": [
                {"cn_img": _IMAGE, "cn_stop": 0.5, "cn_weight": 0.6, "cn_type": "ImagePrompt"},
                {"cn_img": _IMAGE, "cn_stop": 0.9, "cn_weight": 0.75, "cn_type": "FaceSwap"},
            ],
        },
    )
]
QUERY_JOB_RESPONSES: Final = {
    200: _spec(
        AsyncJobResponse, "The job: WAITING, RUNNING, SUCCESS (job_status Finished) or ERROR", _RUNNING, _SUCCESS
    ),
    404: _spec(AsyncJobResponse, "No such job", _NOT_FOUND),
}
JOB_QUEUE_RESPONSES: Final = {
    200: _spec(
        JobQueueInfo,
        "Queued + running jobs, ended jobs, the last job queued",
        {"running_size": 1, "finished_size": 12, "last_job_id": _JOB_ID},
    ),
}
_INFO = {"job_id": _JOB_ID, "in_queue_mills": 1764178568199, "start_mills": 1764178568425,
         "finish_mills": 1764178570046, "is_finished": True}  # fmt: skip
JOB_HISTORY_RESPONSES: Final = {
    200: _spec(
        JobHistoryResponse | HistoryMessage,
        "Queued and running jobs, and ended ones newest first (one page); with delete=true&job_id=..., "
        '{"message": "Deleted"} or {"message": "Not found"}',
        {"queue": [], "history": [_INFO]},
        {"message": "Deleted"},
    )
}
STOP_RESPONSES: Final = {200: _spec(StopResponse, "Always success, also when nothing runs", {"msg": "success"})}
MODELS_RESPONSES: Final = {
    200: _spec(
        dict[str, list[str]],
        "The same object as GET /v1/engines/all-models (that route reads the folders on every call)",
        {"model_filenames": ["juggernautXL_v8Rundiffusion.safetensors"], "lora_filenames": [], "vae_filenames": []},
    )
}
PING_RESPONSES: Final = {200: ResponseSpec(data_container=str, generate_examples=False, media_type="text/plain",
                                           examples=[Example(value="pong")])}  # fmt: skip
