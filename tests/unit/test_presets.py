"""Bundled presets: each loads, names only legal values, and maps onto request defaults."""

from __future__ import annotations

import pytest

from fooocus_es.engine.planning import aspect, performance, presets
from fooocus_es.engine.planning.plan import MAX_LORAS, finalize, merge_layers
from fooocus_es.engine.planning.sampler_names import SAMPLER_NAMES, SCHEDULER_NAMES
from fooocus_es.engine.planning.styles import style_names

FOOOCUS_PRESETS = ("default", "anime", "realistic", "lightning", "lcm", "sai", "playground_v2.5", "pony_v6")


def test_every_fooocus_preset_is_bundled() -> None:
    assert set(FOOOCUS_PRESETS) | {"demo"} <= set(presets.list_presets())


@pytest.mark.parametrize("name", presets.list_presets())
def test_bundled_preset_names_only_legal_values(name: str) -> None:
    preset = presets.load_preset(name)
    fields = presets.preset_request_defaults(preset)
    assert set(fields.get("style_selections", [])) <= set(style_names())
    assert fields["sampler_name"] in SAMPLER_NAMES
    assert fields["scheduler_name"] in SCHEDULER_NAMES
    assert fields["performance_selection"] in performance.PERFORMANCE_NAMES
    aspect.parse_aspect_ratio(fields["aspect_ratios_selection"])
    assert fields["base_model_name"].endswith(".safetensors")
    for file_name, url, folder in presets.preset_downloads(preset):
        assert url.startswith("https://huggingface.co/") and url.endswith("/" + file_name)
        assert folder in ("checkpoints", "loras", "vae")
    finalize(merge_layers({}, fields))  # the resolved request is well-formed


@pytest.mark.parametrize("name", FOOOCUS_PRESETS)
def test_cfg_is_guidance_scale_and_loras_fill_five_slots(name: str) -> None:
    preset = presets.load_preset(name)
    fields = presets.preset_request_defaults(preset)
    assert fields["guidance_scale"] == preset["default_cfg_scale"]
    assert "adaptive_cfg" not in fields  # FooocusAPI's mapping of cfg onto adaptive_cfg is not copied
    assert len(fields["loras"]) == MAX_LORAS
    assert all(set(lora) == {"enabled", "model_name", "weight"} for lora in fields["loras"])


def test_preset_values_follow_fooocus() -> None:
    def fields(name: str) -> dict:
        return presets.preset_request_defaults(presets.load_preset(name))

    sai = fields("sai")
    assert (sai["refiner_model_name"], sai["refiner_switch"]) == ("sd_xl_refiner_1.0_0.9vae.safetensors", 0.75)
    offset = "sd_xl_offset_example-lora_1.0.safetensors"
    assert sai["loras"][0] == {"enabled": True, "model_name": offset, "weight": 0.5}
    assert fields("realistic")["style_selections"] == ["Fooocus V2", "Fooocus Photograph", "Fooocus Negative"]
    assert fields("realistic")["negative_prompt"]
    assert fields("lightning")["performance_selection"] == "Lightning"
    assert fields("lcm")["performance_selection"] == "Extreme Speed"
    assert fields("anime")["guidance_scale"] == 6.0
    playground = fields("playground_v2.5")
    assert (playground["sampler_name"], playground["scheduler_name"]) == ("dpmpp_2m", "edm_playground_v2.5")
    assert playground["inpaint_engine"] == "None"
    pony = fields("pony_v6")
    assert (pony["vae_name"], pony["style_selections"]) == ("ponyDiffusionV6XL_vae.safetensors", ["Fooocus Pony"])
