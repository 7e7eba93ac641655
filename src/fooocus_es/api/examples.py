"""OpenAPI examples: one per endpoint, shown in /schema (Swagger and ReDoc)."""

from __future__ import annotations

from typing import Any

from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example

from fooocus_es.api.structs import ControlResponse, TaskRecord, TasksResponse


def _spec(**kw: Any) -> ResponseSpec:
    """Our own examples only: Litestar's generated ones are random noise."""
    return ResponseSpec(generate_examples=False, **kw)


_TASK_ID = "85c10c81e9e2482d90a64c3704137d3a"
_OUTPUT = "http://127.0.0.1:7866/outputs/2026-11-26/2026-11-26_17-36-09_5201.png"

RECORD: dict[str, Any] = {
    "id": 71,
    "task_id": _TASK_ID,
    "req_params": {"prompt": "a lighthouse at dusk", "performance_selection": "Lightning", "image_seed": 1234},
    "in_queue_mills": 1764178568199,
    "start_mills": 1764178568425,
    "finish_mills": 1764178570046,
    "task_status": "finished",
    "progress": 100,
    "webhook_url": "",
    "result": [_OUTPUT],
    "preview": None,
    "error": None,
}
RUNNING = {**RECORD, "finish_mills": None, "task_status": "running", "progress": 34, "result": [],
           "preview": "data:image/jpeg;base64,/9j/4AAQSkZJRg..."}  # fmt: skip
PENDING = {**RUNNING, "start_mills": None, "task_status": "pending", "progress": 0, "preview": None}

GENERATE_BODIES = [
    Example(
        summary="async task",
        value={"prompt": "a lighthouse at dusk", "performance_selection": "Lightning", "async_process": True},
    ),  # fmt: skip
    Example(summary="stream progress", value={"prompt": "a lighthouse", "stream_output": True}),
    Example(summary="image bytes", value={"prompt": "a lighthouse", "output_format": "jpeg", "image_seed": 42}),
    Example(
        summary="everything common",
        value={
            "prompt": "a lighthouse at dusk\nstormy sea",
            "negative_prompt": "blurry",
            "style_selections": ["Fooocus V2", "Fooocus Sharp"],
            "performance_selection": "Speed",
            "aspect_ratios_selection": "1152*896",
            "image_number": 2,
            "image_seed": 1234,
            "guidance_scale": 4.0,
            "output_format": "webp",
            "async_process": True,
            "webhook_url": "https://example.org/hook",
        },
    ),
]

GENERATE_RESPONSES = {
    200: _spec(
        data_container=TaskRecord,
        description="async_process: the task record at once; blocking with Accept: application/json: the finished "
        "record; stream_output: text/event-stream of StreamMessage; otherwise the image bytes",
        examples=[
            Example(summary="async: queued", value=PENDING),
            Example(summary="blocking JSON: finished", value=RECORD),
        ],
    ),
    204: ResponseSpec(data_container=None, generate_examples=False, description="Image bytes asked, none made"),
    429: _spec(
        data_container=dict[str, Any],
        description="The queue is full; see Retry-After",
        examples=[Example(value={"status_code": 429, "detail": "the queue is full (100 tasks pending); retry later"})],
    ),
    400: _spec(
        data_container=dict[str, Any],
        description="A field is invalid; `field` names it",
        examples=[
            Example(value={"status_code": 400, "detail": "image_number: Expected `int` <= 32", "field": "image_number"})
        ],
    ),
}

def _error(status: int, detail: str, description: str | None = None) -> ResponseSpec:
    return _spec(
        data_container=dict[str, Any],
        description=description or detail,
        examples=[Example(value={"status_code": status, "detail": detail})],
    )


_NO_TASK = _error(404, f"task_id: no task '{_TASK_ID}'", "No task has this id")

TASKS_RESPONSES = {
    200: _spec(
        data_container=TasksResponse,
        examples=[Example(value={"history": [RECORD], "current": [RUNNING], "pending": [PENDING]})],
    )
}
TASK_RESPONSES = {
    200: _spec(
        data_container=TaskRecord,
        examples=[Example(summary="running", value=RUNNING), Example(summary="finished", value=RECORD)],
    ),
    404: _NO_TASK,
}
DELETE_TASK_RESPONSES = {
    200: _spec(
        data_container=dict[str, Any], examples=[Example(value={"task_id": _TASK_ID, "message": "task deleted"})]
    ),
    404: _NO_TASK,
    409: _error(409, "task_id: the task is pending; cancel it first (POST /tasks/{task_id}/cancel)"),
}
EVENTS_RESPONSES = {
    200: _spec(
        data_container=list[dict[str, Any]],
        examples=[
            Example(
                value=[
                    {
                        "seq": 1,
                        "type": "TaskQueued",
                        "task_id": _TASK_ID,
                        "at_ms": 1764178568199,
                        "params": {"prompt": "a lighthouse"},
                    },
                    {"seq": 2, "type": "TaskStarted", "task_id": _TASK_ID, "at_ms": 1764178568425, "device": "cuda"},
                    {
                        "seq": 3,
                        "type": "TaskProgress",
                        "task_id": _TASK_ID,
                        "at_ms": 1764178568600,
                        "percent": 13,
                        "message": "Sampling step 1/4, image 1/1 ...",
                        "step": 1,
                    },
                    {
                        "seq": 7,
                        "type": "TaskFinished",
                        "task_id": _TASK_ID,
                        "at_ms": 1764178570046,
                        "result": ["outputs/2026-11-26/2026-11-26_17-36-09_5201.png"],
                    },
                ]  # fmt: skip
            )
        ],
    ),
    404: _NO_TASK,
}
STREAM_RESPONSES = {
    200: _spec(
        data_container=str,
        media_type="text/event-stream",
        description="SSE: `id: <seq>`, `event: <type>`, `data: <event JSON>`, until the terminal event",
    ),
    404: _NO_TASK,
}
CANCEL_RESPONSES = {
    200: _spec(
        data_container=dict[str, Any], examples=[Example(value={"task_id": _TASK_ID, "message": "task cancelled"})]
    ),
    404: _NO_TASK,
}
CONTROL_RESPONSES = {
    200: _spec(
        data_container=ControlResponse,
        examples=[
            Example(summary="stopped", value={"message": "task stopped"}),
            Example(summary="idle", value={"message": "No task running"}),
        ],
    )
}
FILE_RESPONSES = {
    200: _spec(
        data_container=bytes,
        media_type="image/png",
        description="The image; Accept: image/jpeg|webp converts it",
    ),  # fmt: skip
    404: _error(404, "no such file: /outputs/x.png", "No such file (or a name that is not a stored image)"),
    415: _error(
        415,
        "/outputs/x.png: the stored file is not a png, jpeg or webp image, so it cannot be sent as image/webp",
        "Accept asks for a conversion, and the stored file is not an image that can be converted",
    ),
}
MODELS_RESPONSES = {
    200: _spec(
        data_container=dict[str, list[str]],
        examples=[
            Example(
                value={
                    "model_filenames": ["juggernautXL_v8Rundiffusion.safetensors"],
                    "lora_filenames": [],
                    "vae_filenames": [],
                    "controlnet_filenames": ["clip_vision_vit_h.safetensors", "ip-adapter-plus_sdxl_vit-h.bin"],
                    "tool_filenames": ["isnet-general-use.onnx", "sam_vit_b_01ec64.pth"],
                }
            )
        ],  # fmt: skip
    )
}
STYLES_RESPONSES = {
    200: _spec(data_container=list[str], examples=[Example(value=["Fooocus V2", "Random Style", "Fooocus Enhance"])])
}
PRESETS_RESPONSES = {
    200: _spec(
        data_container=dict[str, Any],
        examples=[Example(value={"presets": ["default", "demo"], "server_preset": "default"})],
    )
}
HEALTH_RESPONSES = {
    200: _spec(
        data_container=dict[str, Any],
        examples=[
            Example(
                value={
                    "status": "ok",
                    "ready": True,
                    "not_ready": [],  # e.g. "storage: outputs/ is out of space ([Errno 28] No space left on device)"
                    "storage": [],  # the faults: place (log, outputs, inputs), kind (full, locked, unwritable), reason
                    "version": "0.1.0",
                    "device": "cuda",
                    "preset": "default",
                    "loaded_model": "juggernautXL_v8Rundiffusion.safetensors",
                    "queue_depth": 3,
                    "running": [_TASK_ID],
                    "missing_models": {},
                    "downloading": {},
                }  # fmt: skip
            )
        ],
    )
}
RUNNERS_RESPONSES = {
    200: _spec(
        data_container=dict[str, Any],
        examples=[
            Example(
                value={
                    "runners": [
                        {
                            "runner_id": "gpu1-4242-cuda", "pool": "default", "host": "gpu1", "device": "cuda",
                            "state": "busy", "task_id": _TASK_ID, "model": "juggernautXL_v8Rundiffusion.safetensors",
                            "seen_ms": 1764672000000, "checkpoints": ["juggernautXL_v8Rundiffusion.safetensors"],
                            "loras": ["sd_xl_offset_example-lora_1.0.safetensors"], "vaes": [],
                        }
                    ]
                }  # fmt: skip
            )
        ],
    )
}

_TOOL_ERRORS = {
    400: _error(400, "image: required: an image as base64, a data: URI or an http(s) URL", "A field is wrong"),
    501: _error(501, "onnxruntime is not installed on this server: install the tools extra", "A package is missing"),
}
DESCRIBE_RESPONSES = {
    200: _spec(data_container=dict[str, str], examples=[Example(value={"describe": "a red car parked on a street"})]),
    **_TOOL_ERRORS,
}
MASK_RESPONSES = {
    200: _spec(data_container=str, examples=[Example(value="iVBORw0KGgoAAAANSUhEUgAA...")]),
    **_TOOL_ERRORS,
}
