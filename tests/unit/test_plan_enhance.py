"""Plan rules of enhance (brief §5): when it applies, each pass's prompts, seed, inpaint settings and
mask options, the uov before or after with its prompt type, and the enhance tab."""

from __future__ import annotations

from typing import Any

from fooocus_es.engine.planning import plan as planning
from fooocus_es.engine.planning.enhance import PENDING_IMAGE
from fooocus_es.engine.planning.plan_types import InpaintTask, UpscaleTask, VaryTask
from fooocus_es.engine.planning.tool_types import MaskOptions

BASE = "base.safetensors"


def plan_for(**sent: Any) -> planning.GenerationPlan:
    params = planning.finalize(planning.merge_layers({"base_model_name": BASE, "image_seed": 5, **sent}))
    return planning.build_plan("t", params)


def ctrl(**extra: Any) -> dict[str, Any]:
    return {"enhance_enabled": True, "enhance_mask_model": "u2netp", **extra}


def test_enhance_needs_the_checkbox_and_something_to_apply() -> None:
    assert plan_for(prompt="p").enhance is None
    assert plan_for(prompt="p", enhance_checkbox=True).enhance is None  # nothing enabled, uov Disabled
    assert plan_for(prompt="p", enhance_ctrls=[ctrl()]).enhance is None  # no checkbox
    disabled = plan_for(prompt="p", enhance_checkbox=True, enhance_ctrls=[ctrl(enhance_enabled=False)])
    assert disabled.enhance is None
    plan = plan_for(prompt="p", enhance_checkbox=True, enhance_ctrls=[ctrl(), ctrl(enhance_enabled=False), ctrl()])
    assert plan.enhance is not None and len(plan.enhance.passes) == 2


def test_each_pass_inpaints_with_its_own_prompt_settings_and_the_task_seed() -> None:
    plan = plan_for(
        prompt="a castle", negative_prompt="blurry", image_number=3, debugging_dino=True, dino_erode_or_dilate=7,
        enhance_checkbox=True,
        enhance_ctrls=[
            ctrl(enhance_prompt="a face", enhance_inpaint_engine="None", enhance_inpaint_strength=0.4,
                 enhance_inpaint_respective_field=0.2, enhance_inpaint_erode_or_dilate=-3, enhance_mask_invert=True),
            ctrl(enhance_mask_model="sam", enhance_mask_dino_prompt="hand", enhance_negative_prompt="extra fingers",
                 enhance_mask_sam_model="vit_l", enhance_mask_box_threshold=0.5, enhance_mask_sam_max_detections=2),
        ],
    )  # fmt: skip
    assert plan.seeds == (5, 6, 7)
    first, second = plan.enhance.passes
    for step in (first, second):
        assert step.plan.seeds == (5,)  # Fooocus: disable_seed_increment, image_number 1
        assert isinstance(step.plan.image_task, InpaintTask)
        assert step.plan.image_task.image == PENDING_IMAGE and step.plan.image_task.outpaint == ()
        assert step.plan.enhance is None and step.plan.image_prompts == ()
    assert first.plan.resolved_prompts == ("a face",) and first.plan.resolved_negative_prompts == ("blurry",)
    assert second.plan.resolved_prompts == ("a castle",)  # an empty control prompt falls back to the task's
    assert second.plan.resolved_negative_prompts == ("extra fingers",)
    task = first.plan.image_task
    assert (task.inpaint_engine, task.denoise, task.respective_field) == ("None", 0.4, 0.2)
    assert (task.erode_or_dilate, task.invert_mask) == (0, False)  # applied to the pass's mask instead:
    assert (first.erode_or_dilate, first.invert) == (-3, True)
    assert second.mask == MaskOptions(
        mask_model="sam", dino_prompt_text="hand", sam_model="vit_l", box_threshold=0.5, sam_max_detections=2,
        dino_erode_or_dilate=7, dino_debug=True,  # the task-wide DINO fields
    )  # fmt: skip
    assert first.plan.steps == plan.steps  # the performance's steps, as the main generation


def test_uov_before_or_after_with_original_or_last_filled_prompts() -> None:
    controls = [ctrl(enhance_prompt="one"), ctrl(enhance_prompt="two", enhance_negative_prompt=""), ctrl()]
    common = {"prompt": "main", "enhance_checkbox": True, "enhance_ctrls": controls}
    before = plan_for(**common, enhance_uov_method="Vary (Subtle)").enhance
    assert before.uov_after is None and isinstance(before.uov_before.image_task, VaryTask)
    assert before.uov_before.image_task.image == PENDING_IMAGE
    assert before.uov_before.resolved_prompts == ("main",)
    after = plan_for(
        **common, enhance_uov_method="Upscale (2x)", enhance_uov_processing_order="After Last Enhancement",
        enhance_uov_prompt_type="Last Filled Enhancement Prompts",
    ).enhance  # fmt: skip
    assert after.uov_before is None and isinstance(after.uov_after.image_task, UpscaleTask)
    assert after.uov_after.resolved_prompts == ("two",)  # the last enabled control with a prompt
    uov_only = plan_for(prompt="x", enhance_checkbox=True, enhance_uov_method="Vary (Strong)").enhance
    assert uov_only.passes == () and uov_only.uov_before is not None
    assert uov_only.uov_before.steps != plan_for(prompt="x").steps  # uov steps for the performance mode


def test_the_enhance_tab_is_one_image_its_input_and_nothing_else_without_a_pass() -> None:
    plan = plan_for(prompt="x", image_number=4, enhance_input_image="inputs/e.png")
    assert plan.seeds == (5,) and plan.enhance is not None
    assert plan.enhance.input_image == "inputs/e.png" and plan.enhance.passes == ()
    plan = plan_for(
        prompt="x", enhance_input_image="inputs/e.png", enhance_checkbox=True, enhance_ctrls=[ctrl()],
        debugging_enhance_masks_checkbox=True, save_final_enhanced_image_only=True,
    )  # fmt: skip
    assert plan.enhance.input_image == "inputs/e.png" and len(plan.enhance.passes) == 1
    assert plan.enhance.debug_masks and plan.enhance.final_only
    assert not any("enhance" in note for note in plan.notes)
