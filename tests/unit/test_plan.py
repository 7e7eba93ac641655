"""Pure request rules: layering, performance, sizes, seeds, name validation."""

from __future__ import annotations

import random

import msgspec
import pytest

from fooocus_es.api.structs import GenerateRequest, sent_fields
from fooocus_es.engine.planning import aspect, performance, presets
from fooocus_es.engine.planning.plan import (
    MAX_SEED,
    ParamError,
    build_plan,
    finalize,
    image_seeds,
    merge_layers,
    validate_names,
)


def resolve(body: dict, *preset_layers: dict) -> dict:
    request = msgspec.convert(body, GenerateRequest)
    return finalize(merge_layers(sent_fields(request), *preset_layers), rng=random.Random(7))


def test_sent_fields_win_over_presets_and_presets_over_defaults() -> None:
    demo = presets.preset_request_defaults(presets.load_preset("demo"))
    params = resolve({"prompt": "cat", "aspect_ratios_selection": "1152*896"}, demo)
    assert params["prompt"] == "cat"
    assert params["aspect_ratios_selection"] == "1152*896"  # sent, although the preset says 256*256
    assert params["base_model_name"] == demo["base_model_name"]
    assert params["style_selections"] == []  # from the preset, not the FooocusAPI default
    # Sending a value equal to the default still counts as sent.
    assert resolve({"guidance_scale": 4.0}, {"guidance_scale": 9.0})["guidance_scale"] == 4.0
    assert resolve({}, {"guidance_scale": 9.0})["guidance_scale"] == 9.0


def test_performance_modes_set_steps_and_force_their_overrides() -> None:
    for name, steps in {"Quality": 60, "Speed": 30, "Extreme Speed": 8, "Lightning": 4, "Hyper-SD": 4}.items():
        assert performance.steps_for(name) == steps
    assert performance.steps_for("Speed", uov=True) == 18 and performance.steps_for("Speed", 12) == 12
    lightning = resolve({"performance_selection": "Lightning", "guidance_scale": 7, "sharpness": 5})
    assert (lightning["guidance_scale"], lightning["sharpness"]) == (1.0, 0.0)
    assert (lightning["sampler_name"], lightning["scheduler_name"]) == ("euler", "sgm_uniform")
    speed = resolve({"performance_selection": "Speed", "guidance_scale": 7})
    assert speed["guidance_scale"] == 7


def test_sizes_parse_any_w_by_h_and_snap_to_multiples_of_8() -> None:
    assert aspect.resolve_size("1152*896") == (1152, 896)
    assert aspect.resolve_size("1152×896 | 9:7") == (1152, 896)
    assert aspect.resolve_size("1152*896", 300, -1) == (296, 896)
    for bad in ("big", "10*10", "1024*99999"):
        with pytest.raises(aspect.AspectRatioError):
            aspect.parse_aspect_ratio(bad)


def test_seeds_random_when_out_of_range_and_incremented_per_image() -> None:
    params = resolve({"image_seed": -1, "image_number": 3})
    assert 0 <= params["image_seed"] <= MAX_SEED
    seed = params["image_seed"]
    assert image_seeds(params) == tuple((seed + i) % (MAX_SEED + 1) for i in range(3))
    fixed = resolve({"image_seed": MAX_SEED, "image_number": 2})
    assert image_seeds(fixed) == (MAX_SEED, 0)
    same = resolve({"image_seed": 5, "image_number": 2, "disable_seed_increment": True})
    assert image_seeds(same) == (5, 5)


def test_loras_padded_to_five_and_jpg_means_jpeg() -> None:
    params = resolve({"loras": [{"model_name": "a.safetensors", "weight": 0.3}], "output_format": "jpg"})
    assert len(params["loras"]) == 5 and params["loras"][0]["model_name"] == "a.safetensors"
    assert params["output_format"] == "jpeg"


def test_unknown_names_are_rejected_with_the_field() -> None:
    ok = resolve({"base_model_name": "m.safetensors"})
    validate_names(ok, checkpoints={"m.safetensors"}, downloadable=set())
    cases = {
        "style_selections[1]": {"style_selections": ["Fooocus Sharp", "Nope"]},
        "sampler_name": {"sampler_name": "warp_drive"},
        "scheduler_name": {"scheduler_name": "sometimes"},
        "base_model_name": {"base_model_name": "missing.safetensors"},
        "aspect_ratios_selection": {"aspect_ratios_selection": "wide"},
    }
    for field, body in cases.items():
        with pytest.raises(ParamError) as caught:
            validate_names(
                resolve({"base_model_name": "m.safetensors", **body}), checkpoints={"m.safetensors"}, downloadable=set()
            )
        assert caught.value.field == field


def test_build_plan_joins_prompt_lines_and_resolves_everything() -> None:
    params = resolve(
        {
            "prompt": "a cat\n\nin a hat",
            "style_selections": [],  # styles are covered in test_styles_and_prompts.py
            "performance_selection": "Lightning",
            "image_number": 2,
            "image_seed": 9,
            "aspect_ratios_selection": "256*128",
        }
    )
    plan = build_plan("t1", params)
    assert (plan.prompt, plan.width, plan.height, plan.steps, plan.seeds) == ("a cat, in a hat", 256, 128, 4, (9, 10))


def test_request_struct_rejects_out_of_range_and_ignores_unknown_fields() -> None:
    for body in (
        {"image_number": 33},
        {"guidance_scale": 0.5},
        {"loras": [{"weight": 3}]},
        {"performance_selection": "Turbo"},
    ):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(body, GenerateRequest)
    # Unknown keys are ignored, as upstream's pydantic models do (the API names them: api/tolerance.py).
    assert msgspec.convert({"frobnicate": 1, "prompt": "x"}, GenerateRequest).prompt == "x"
