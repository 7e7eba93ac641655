"""Pure plan rules of the generation features: LoRAs, refiner, VAE, FreeU, clip_skip, image tasks, name checks."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from fooocus_es.engine.planning import plan as planning
from fooocus_es.engine.planning.demo_names import DEMO_CHECKPOINT
from fooocus_es.engine.planning.plan_types import ImageTask, InpaintTask, UpscaleTask, VaryTask

BASE = "base.safetensors"
UOV = "inputs/x.png"


def plan_for(**sent: Any) -> planning.GenerationPlan:
    params = planning.finalize(planning.merge_layers({"base_model_name": BASE, "image_seed": 5, **sent}))
    return planning.build_plan("t", params)


def lora(name: str, weight: float = 0.5, enabled: bool = True) -> dict[str, Any]:
    return {"enabled": enabled, "model_name": name, "weight": weight}


def test_loras_keep_enabled_named_nonzero_slots_in_order() -> None:
    plan = plan_for(loras=[lora("a", 0.3), lora("None"), lora("b", 0.0), lora("c", -1.5), lora("d", enabled=False)])
    assert plan.loras == (("a", 0.3), ("c", -1.5))


@pytest.mark.parametrize(
    ("performance", "expected"),
    [
        ("Speed", None),
        ("Quality", None),
        ("Extreme Speed", ("sdxl_lcm_lora.safetensors", 1.0)),
        ("Lightning", ("sdxl_lightning_4step_lora.safetensors", 1.0)),
        ("Hyper-SD", ("sdxl_hyper_sd_4step_lora.safetensors", 0.8)),
    ],
)
def test_performance_modes_append_their_lora(performance: str, expected: tuple[str, float] | None) -> None:
    plan = plan_for(performance_selection=performance, loras=[lora("style", 0.7)])
    assert plan.loras[0] == ("style", 0.7)
    assert plan.loras[1:] == ((expected,) if expected else ())


def test_the_demo_model_gets_its_own_performance_loras() -> None:
    plan = plan_for(performance_selection="Lightning", base_model_name=DEMO_CHECKPOINT)
    assert plan.loras == (("fooocus_es_demo_lightning_lora.safetensors", 1.0),)


def test_refiner_switch_step_from_fraction_or_overwrite() -> None:
    plan = plan_for(refiner_model_name="r.safetensors", refiner_switch=0.8)
    assert (plan.refiner_model, plan.steps, plan.refiner_switch_step) == ("r.safetensors", 30, 24)
    assert plan_for(refiner_model_name="r.safetensors", overwrite_switch=7).refiner_switch_step == 7
    assert plan_for(refiner_model_name="r.safetensors", overwrite_switch=99).refiner_switch_step == 30
    # No refiner, the base named as its own refiner, or a mode that forces it off: nothing switches.
    for sent in ({}, {"refiner_model_name": BASE}, {"refiner_model_name": "r", "performance_selection": "Lightning"}):
        plan = plan_for(**sent)
        assert plan.refiner_model is None and plan.refiner_switch_step == plan.steps


def test_vae_freeu_clip_skip_and_nsfw_reach_the_plan() -> None:
    assert plan_for().vae_name is None and plan_for().freeu is None and plan_for().clip_skip == 2
    plan = plan_for(vae_name="v.safetensors", freeu_enabled=True, freeu_b1=1.3, clip_skip=3, black_out_nsfw=True)
    assert plan.vae_name == "v.safetensors"
    assert plan.freeu == (1.3, 1.02, 0.99, 0.95)
    assert plan.clip_skip == 3 and plan.black_out_nsfw


@pytest.mark.parametrize(
    ("method", "sent", "expected"),
    [
        ("Vary (Subtle)", {}, VaryTask(image=UOV, denoise=0.5)),
        ("Vary (Strong)", {}, VaryTask(image=UOV, denoise=0.85)),
        ("Vary (Strong)", {"overwrite_vary_strength": 0.3}, VaryTask(image=UOV, denoise=0.3)),
        ("Upscale (1.5x)", {}, UpscaleTask(image=UOV, method="Upscale (1.5x)", denoise=0.382, upscale_factor=1.5)),
        (
            "Upscale (2x)",
            {"overwrite_upscale_strength": 0.2},
            UpscaleTask(image=UOV, method="Upscale (2x)", denoise=0.2, upscale_factor=2.0),
        ),
        (
            "Upscale (Fast 2x)",
            {},
            UpscaleTask(image=UOV, method="Upscale (Fast 2x)", denoise=0.382, upscale_factor=2.0, fast_upscale=True),
        ),
        (
            "Upscale (Custom)",
            {"upscale_multiple": 3.5},
            UpscaleTask(image=UOV, method="Upscale (Custom)", denoise=0.382, upscale_factor=3.5),
        ),
    ],
)
def test_uov_methods(method: str, sent: dict[str, Any], expected: ImageTask) -> None:
    plan = plan_for(uov_method=method, uov_input_image=UOV, **sent)
    assert plan.image_task == expected  # the kind's own struct, every field
    assert plan.steps == 18  # Speed's upscale/vary step count


def test_image_tasks_are_a_tagged_union_on_kind() -> None:
    tasks: list[ImageTask] = [
        VaryTask(image=UOV, denoise=0.5),
        UpscaleTask(image=UOV, method="Upscale (2x)", denoise=0.382, upscale_factor=2.0),
        InpaintTask(image="inputs/i.png", mask="inputs/m.png", outpaint=("Left",), outpaint_distance=(8, 0, 0, 0)),
    ]
    encoded = [msgspec.json.decode(msgspec.json.encode(task)) for task in tasks]
    assert [item["kind"] for item in encoded] == ["vary", "upscale", "inpaint"]
    assert "upscale_factor" not in encoded[0] and "mask" not in encoded[1]  # each kind carries only its fields
    decoded = msgspec.json.decode(msgspec.json.encode(tasks), type=list[ImageTask])
    assert decoded == tasks
    plan = plan_for(inpaint_input_image="inputs/i.png", inpaint_mask_image_upload="inputs/m.png")
    assert msgspec.json.decode(msgspec.json.encode(plan), type=planning.GenerationPlan) == plan
    with pytest.raises(msgspec.ValidationError, match="kind"):
        msgspec.json.decode(b'{"kind": "enhance", "image": "inputs/x.png"}', type=ImageTask)


def test_tab_rules_pick_uov_before_inpaint_and_mixing_flags_gate_image_prompts() -> None:
    both = {"uov_method": "Vary (Subtle)", "uov_input_image": "inputs/u.png", "inpaint_input_image": "inputs/i.png"}
    assert isinstance(plan_for(**both).image_task, VaryTask)
    assert plan_for(uov_method="Disabled", uov_input_image="inputs/u.png").image_task is None
    inpaint = plan_for(inpaint_input_image="inputs/i.png", inpaint_mask_image_upload="inputs/m.png")
    assert isinstance(inpaint.image_task, InpaintTask) and inpaint.image_task.mask == "inputs/m.png"
    assert inpaint.steps == 30  # inpainting keeps the normal step count
    image_prompt = [{"cn_img": "inputs/c.png", "cn_stop": 0.5, "cn_weight": 0.6, "cn_type": "ImagePrompt"}]
    assert plan_for(**both, controlnet_image=image_prompt).image_task is None
    mixed = plan_for(**both, controlnet_image=image_prompt, mixing_image_prompt_and_inpaint=True)
    assert isinstance(mixed.image_task, InpaintTask)
    assert [prompt.cn_type for prompt in mixed.image_prompts] == ["ImagePrompt"]  # applied on the inpaint tab
    assert any("refiner" in note for note in plan_for(**both, refiner_model_name="r").notes)


def test_outpaint_forces_full_strength_and_field() -> None:
    task = plan_for(
        inpaint_input_image="inputs/i.png",
        outpaint_selections=["Left", "Top"],
        outpaint_distance=[10, 20, 0, 0],
        inpaint_strength=0.4,
        inpaint_respective_field=0.2,
    ).image_task
    assert isinstance(task, InpaintTask)
    assert (task.denoise, task.respective_field) == (1.0, 1.0)
    assert task.outpaint == ("Left", "Top") and task.outpaint_distance == (10, 20, 0, 0)
    plain = plan_for(inpaint_input_image="inputs/i.png", inpaint_strength=0.4, inpaint_respective_field=0.2)
    assert isinstance(plain.image_task, InpaintTask)
    assert (plain.image_task.denoise, plain.image_task.respective_field) == (0.4, 0.2)


def validate(sent: dict[str, Any], **kwargs: Any) -> None:
    params = planning.finalize(planning.merge_layers({"base_model_name": BASE, **sent}))
    defaults: dict[str, Any] = {"checkpoints": {BASE}, "downloadable": set(), "loras": {"a"}, "vaes": {"v"}}
    planning.validate_names(params, sent=sent, **{**defaults, **kwargs})


@pytest.mark.parametrize(
    ("sent", "field"),
    [
        ({"loras": [lora("a"), lora("missing")]}, "loras[1].model_name"),
        ({"vae_name": "missing"}, "vae_name"),
        ({"refiner_model_name": "missing"}, "refiner_model_name"),
        ({"black_out_nsfw": True}, "black_out_nsfw"),
        ({"inpaint_input_image": "inputs/i.png", "inpaint_engine": "v2.6"}, "inpaint_engine"),
    ],
)
def test_unknown_feature_names_are_refused_with_their_field(sent: dict[str, Any], field: str) -> None:
    with pytest.raises(planning.ParamError) as caught:
        validate(sent, safety_checker=False, inpaint_files=set())
    assert caught.value.field == field


def test_known_names_pass_and_missing_inpaint_files_are_named() -> None:
    validate({"loras": [lora("a"), lora("gone", enabled=False)], "vae_name": "v", "refiner_model_name": BASE})
    validate({"inpaint_input_image": "inputs/i.png", "inpaint_engine": "None"}, inpaint_files=set())
    with pytest.raises(planning.ParamError, match="inpaint_v26.fooocus.patch"):
        validate({"inpaint_input_image": "inputs/i.png"}, inpaint_files={"fooocus_inpaint_head.pth"})
    validate(
        {"inpaint_input_image": "inputs/i.png"}, inpaint_files={"fooocus_inpaint_head.pth", "inpaint_v26.fooocus.patch"}
    )
