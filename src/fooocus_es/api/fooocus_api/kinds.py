"""Which kind of Fooocus-API job a task is: from the route that made it, else from its parameters.

Fooocus-API names the job type after the request class (`call_worker.get_task_type`), so
text-to-image-with-ip is "Text to Image" although it carries image prompts, which its stored
parameters cannot tell apart from an image-prompt job. Tasks made through the older routes
therefore record their route as the task's `wire` (`fooocus-api/<route>`, durable in TaskQueued);
every other task (FooocusAPI's /v1/engine/generate/, OpenAI's) gets the type its parameters imply.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, Literal

RouteKind = Literal["text-to-image", "text-to-image-with-ip", "upscale-vary", "inpaint-outpaint", "image-prompt"]
JobType = Literal[
    "Text to Image", "Image Upscale or Variation", "Image Inpaint or Outpaint", "Image Prompt", "Image Enhancement",
    "Not Found",
]  # fmt: skip

JOB_TYPES: Final[Mapping[str, JobType]] = MappingProxyType(
    {
        "text-to-image": "Text to Image",
        "text-to-image-with-ip": "Text to Image",
        "upscale-vary": "Image Upscale or Variation",
        "inpaint-outpaint": "Image Inpaint or Outpaint",
        "image-prompt": "Image Prompt",
    }
)
WIRE_PREFIX: Final = "fooocus-api/"


def wire_of(kind: RouteKind) -> str:
    """The task's `wire` for a job made through an older route."""
    return WIRE_PREFIX + kind


def job_type_of(params: Mapping[str, Any], wire: str) -> JobType:
    route = wire.removeprefix(WIRE_PREFIX) if wire.startswith(WIRE_PREFIX) else None
    if route in JOB_TYPES:
        return JOB_TYPES[route]
    return derived_job_type(params)


def derived_job_type(params: Mapping[str, Any]) -> JobType:
    """The image work the finalized params ask for (as engine.plan.image_task picks it), else the image prompts."""
    if params.get("enhance_checkbox") and params.get("enhance_input_image"):
        return "Image Enhancement"
    tab = params.get("current_tab")
    image_prompts = tab == "ip"
    uov = (tab == "uov" or (image_prompts and params.get("mixing_image_prompt_and_vary_upscale"))) and (
        params.get("uov_input_image") and params.get("uov_method", "Disabled") != "Disabled"
    )
    if uov:
        return "Image Upscale or Variation"
    inpaint = tab == "inpaint" or (image_prompts and params.get("mixing_image_prompt_and_inpaint"))
    if inpaint and params.get("inpaint_input_image"):
        return "Image Inpaint or Outpaint"
    return "Image Prompt" if image_prompts else "Text to Image"
