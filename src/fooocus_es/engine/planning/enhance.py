"""Fooocus's enhance as a plan (brief §5, Fooocus `async_worker.handler` / `process_enhance`).

Pure: from the finalized params, the vary/upscale and inpaint passes each image goes through,
each pass an ordinary plan (built by `build_plan` from derived params, so prompts, styles, V2,
steps and the inpaint engine follow the same rules as a task's) whose input image and mask are
filled in when the pass runs. The rules kept from Fooocus:

- every pass runs with image_number 1 and the task seed itself (disable_seed_increment), so image
  i > 0 is enhanced with the same seed as image 0;
- a control's empty prompt or negative falls back to the task's;
- `enhance_uov_prompt_type` "Last Filled Enhancement Prompts": the uov after the last pass takes
  the last enabled control's non-empty prompts.
Not carried into the passes: image prompts (controlnet_image) and the inpaint tab's own image and
outpaint fields, which belong to the first generation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from fooocus_es.engine.planning.plan_types import EnhancePass, EnhancePlan, GenerationPlan
from fooocus_es.engine.planning.tool_types import MaskOptions

PENDING_IMAGE: Final = "enhance:pending"  # a pass's input image and mask, set when it runs
AFTER_LAST: Final = "After Last Enhancement"
LAST_FILLED: Final = "Last Filled Enhancement Prompts"
# What a pass's params reset: the first generation's own inputs and modes.
_PASS_RESETS: Final[dict[str, Any]] = {
    "enhance_checkbox": False,
    "enhance_input_image": "",
    "enhance_ctrls": [],
    "image_number": 1,
    "disable_seed_increment": True,
    "controlnet_image": [],
    "mixing_image_prompt_and_vary_upscale": False,
    "mixing_image_prompt_and_inpaint": False,
    "uov_input_image": "",
    "inpaint_input_image": "",
    "inpaint_mask_image_upload": "",
    "inpaint_additional_prompt": "",
    "outpaint_selections": [],
    "debugging_inpaint_preprocessor": False,
    "debugging_cn_preprocessor": False,
}

PlanBuilder = Callable[[dict[str, Any]], GenerationPlan]


def enabled_controls(params: dict[str, Any]) -> list[dict[str, Any]]:
    return [ctrl for ctrl in params.get("enhance_ctrls") or [] if ctrl.get("enhance_enabled")]


def should_enhance(params: dict[str, Any]) -> bool:
    """Fooocus: the checkbox, and a uov method or an enabled control to apply."""
    return bool(params.get("enhance_checkbox")) and (
        params.get("enhance_uov_method", "Disabled") != "Disabled" or bool(enabled_controls(params))
    )


def enhance_plan(params: dict[str, Any], build: PlanBuilder) -> EnhancePlan | None:
    """The enhance passes of finalized `params` (None: no enhance); `build` makes a plan of params."""
    input_image = str(params.get("enhance_input_image") or "")
    if not should_enhance(params):
        # The enhance tab without anything to apply answers its input image, as Fooocus does.
        return EnhancePlan(input_image=input_image) if input_image else None
    controls = enabled_controls(params)
    base = {**params, **_PASS_RESETS}
    passes = tuple(_pass(base, ctrl, params, build) for ctrl in controls)
    uov_method = params["enhance_uov_method"]
    uov = None
    if uov_method != "Disabled":
        after = params["enhance_uov_processing_order"] == AFTER_LAST
        prompts = {}
        if after and params["enhance_uov_prompt_type"] == LAST_FILLED:
            prompts = _last_filled(controls)
        uov = build(
            {**base, **prompts, "current_tab": "uov", "uov_method": uov_method, "uov_input_image": PENDING_IMAGE}
        )
    after = params["enhance_uov_processing_order"] == AFTER_LAST
    return EnhancePlan(
        input_image=input_image,
        uov_before=None if after else uov,
        uov_after=uov if after else None,
        passes=passes,
        debug_masks=bool(params["debugging_enhance_masks_checkbox"]),
        final_only=bool(params["save_final_enhanced_image_only"]),
    )


def mask_options(ctrl: dict[str, Any], params: dict[str, Any]) -> MaskOptions:
    """How an enhance control finds its region: its own mask fields and the task-wide DINO ones."""
    return MaskOptions(
        mask_model=ctrl.get("enhance_mask_model", "sam"),
        cloth_category=ctrl.get("enhance_mask_cloth_category", "full"),
        dino_prompt_text=ctrl.get("enhance_mask_dino_prompt", ""),
        sam_model=ctrl.get("enhance_mask_sam_model", "vit_b"),
        box_threshold=float(ctrl.get("enhance_mask_box_threshold", 0.3)),
        text_threshold=float(ctrl.get("enhance_mask_text_threshold", 0.25)),
        sam_max_detections=int(ctrl.get("enhance_mask_sam_max_detections", 0)),
        dino_erode_or_dilate=int(params.get("dino_erode_or_dilate", 0)),
        dino_debug=bool(params.get("debugging_dino", False)),
    )


def _pass(base: dict[str, Any], ctrl: dict[str, Any], params: dict[str, Any], build: PlanBuilder) -> EnhancePass:
    mask = mask_options(ctrl, params)
    inpaint = {
        **base,
        "current_tab": "inpaint",
        "prompt": ctrl.get("enhance_prompt") or params["prompt"],
        "negative_prompt": ctrl.get("enhance_negative_prompt") or params["negative_prompt"],
        "inpaint_input_image": PENDING_IMAGE,
        "inpaint_mask_image_upload": PENDING_IMAGE,
        "inpaint_engine": ctrl.get("enhance_inpaint_engine", "v2.6"),
        "inpaint_strength": float(ctrl.get("enhance_inpaint_strength", 1.0)),
        "inpaint_respective_field": float(ctrl.get("enhance_inpaint_respective_field", 0.618)),
        "inpaint_disable_initial_latent": bool(ctrl.get("enhance_inpaint_disable_initial_latent", False)),
        "inpaint_erode_or_dilate": 0,  # the pass's own erode/dilate and invert are applied to its mask first
        "invert_mask_checkbox": False,
    }
    return EnhancePass(
        mask=mask,
        erode_or_dilate=int(ctrl.get("enhance_inpaint_erode_or_dilate", 0)),
        invert=bool(ctrl.get("enhance_mask_invert", False)),
        plan=build(inpaint),
    )


def _last_filled(controls: list[dict[str, Any]]) -> dict[str, str]:
    """The last enabled control's non-empty prompt and negative (each looked up on its own)."""
    found: dict[str, str] = {}
    for ctrl in controls:
        if ctrl.get("enhance_prompt"):
            found["prompt"] = ctrl["enhance_prompt"]
        if ctrl.get("enhance_negative_prompt"):
            found["negative_prompt"] = ctrl["enhance_negative_prompt"]
    return found
