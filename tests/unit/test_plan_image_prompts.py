"""Plan rules of image prompts (controlnet_image): which apply, their settings, files, batching."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fooocus_es.engine.diffusion.batching import batch_key
from fooocus_es.engine.models.catalog import ModelCatalog
from fooocus_es.engine.planning import plan as planning
from fooocus_es.engine.planning.demo_names import DEMO_CHECKPOINT
from fooocus_es.engine.planning.image_prompt_files import image_prompt_files
from fooocus_es.engine.planning.plan_types import ControlSettings, ImagePrompt, UpscaleTask

BASE = "base.safetensors"


def finalized(**sent: Any) -> dict[str, Any]:
    return planning.finalize(planning.merge_layers({"base_model_name": BASE, "image_seed": 5, **sent}))


def plan_for(**sent: Any) -> planning.GenerationPlan:
    return planning.build_plan("t", finalized(**sent))


def item(cn_type: str = "ImagePrompt", image: str = "inputs/a.png", **extra: Any) -> dict[str, Any]:
    return {"cn_img": image, "cn_type": cn_type, **extra}


def test_items_with_images_become_image_prompts_in_order_with_their_values() -> None:
    plan = plan_for(
        controlnet_image=[
            item("PyraCanny", cn_stop=0.4, cn_weight=1.0),
            {"cn_img": "", "cn_type": "CPDS"},  # no image: dropped, as FooocusAPI drops empty slots
            item("FaceSwap", "inputs/b.png", cn_stop=0.9, cn_weight=0.75),
        ]
    )
    assert plan.image_prompts == (
        ImagePrompt(cn_type="PyraCanny", image="inputs/a.png", stop=0.4, weight=1.0),
        ImagePrompt(cn_type="FaceSwap", image="inputs/b.png", stop=0.9, weight=0.75),
    )
    assert not any("image prompt" in note for note in plan.notes)  # applied now, no "not applied" note


def test_the_wire_defaults_are_fooocus_apis_and_the_control_settings_come_from_the_request() -> None:
    plan = plan_for(
        controlnet_image=[{"cn_img": "inputs/a.png"}],
        controlnet_softness=0.5, canny_low_threshold=10, canny_high_threshold=200,
        skipping_cn_preprocessor=True, debugging_cn_preprocessor=True,
    )  # fmt: skip
    assert plan.image_prompts == (ImagePrompt(cn_type="ImagePrompt", image="inputs/a.png", stop=0.6, weight=0.6),)
    assert plan.control == ControlSettings(
        softness=0.5, canny_low=10, canny_high=200, skip_preprocessor=True, debug_preprocessor=True
    )


def test_image_prompts_on_an_upscale_apply_only_with_the_mixing_flag() -> None:
    sent = {"uov_input_image": "inputs/u.png", "uov_method": "Upscale (2x)", "controlnet_image": [item()]}
    alone = plan_for(**sent)
    assert alone.image_task is None and alone.image_prompts  # the "ip" tab wins, as in FooocusAPI
    mixed = plan_for(**sent, mixing_image_prompt_and_vary_upscale=True)
    assert isinstance(mixed.image_task, UpscaleTask) and len(mixed.image_prompts) == 1


def test_on_the_enhance_tab_image_prompts_apply_only_with_a_mixing_flag() -> None:
    sent = {"enhance_input_image": "inputs/e.png", "controlnet_image": [item()]}
    assert plan_for(**sent).image_prompts == ()
    assert len(plan_for(**sent, mixing_image_prompt_and_inpaint=True).image_prompts) == 1


def test_image_prompt_plans_never_batch_and_their_prompts_are_in_the_key() -> None:
    plain = plan_for(performance_selection="Lightning")
    prompted = plan_for(performance_selection="Lightning", controlnet_image=[item("CPDS")])
    assert batch_key(plain) is not None and batch_key(prompted) is None
    assert plain.batch_key() != prompted.batch_key()
    assert prompted.batch_key().image_prompts == prompted.image_prompts


def test_files_each_type_needs() -> None:
    assert image_prompt_files("PyraCanny") == ("control-lora-canny-rank128.safetensors",)
    assert image_prompt_files("CPDS") == ("fooocus_xl_cpds_128.safetensors",)
    assert image_prompt_files("ImagePrompt") == (
        "clip_vision_vit_h.safetensors", "ip-adapter-plus_sdxl_vit-h.bin", "fooocus_ip_negative.safetensors",
    )  # fmt: skip
    assert image_prompt_files("FaceSwap")[-1] == "detection_Resnet50_Final.pth"
    assert "detection_Resnet50_Final.pth" not in image_prompt_files("FaceSwap", skip_preprocessor=True)


def test_a_missing_file_is_named_with_its_folder_and_url() -> None:
    params = finalized(controlnet_image=[{"cn_img": ""}, item("FaceSwap")])
    with pytest.raises(planning.ParamError) as raised:
        planning.validate_names(
            params, checkpoints={BASE}, downloadable=set(), image_prompt_files={"clip_vision_vit_h.safetensors"}
        )
    assert raised.value.field == "controlnet_image[1].cn_type"
    message = raised.value.message
    assert "ip-adapter-plus-face_sdxl_vit-h.bin in models/controlnet/" in message
    assert "https://huggingface.co/lllyasviel/misc/resolve/main/ip-adapter-plus-face_sdxl_vit-h.bin" in message
    assert "detection_Resnet50_Final.pth" in message and "clip_vision_vit_h" not in message
    # installed, not checked (downloaded on use), or the demo model (generated): no error
    everything = set(image_prompt_files("FaceSwap"))
    planning.validate_names(params, checkpoints={BASE}, downloadable=set(), image_prompt_files=everything)
    planning.validate_names(params, checkpoints={BASE}, downloadable=set(), image_prompt_files=None)
    demo = finalized(base_model_name=DEMO_CHECKPOINT, controlnet_image=[item("FaceSwap")])
    planning.validate_names(demo, checkpoints={DEMO_CHECKPOINT}, downloadable=set(), image_prompt_files=set())


def test_the_catalogue_downloads_a_plans_image_prompt_files(tmp_path: Path) -> None:
    catalog = ModelCatalog(tmp_path / "models", tmp_path)
    plan = plan_for(controlnet_image=[item("ImagePrompt"), item("PyraCanny")])
    files = catalog.plan_files(plan)
    assert ("clip_vision_vit_h.safetensors", "clip_vision") in files
    assert ("control-lora-canny-rank128.safetensors", "controlnet") in files
    downloads = catalog.downloads()
    assert downloads["ip-adapter-plus_sdxl_vit-h.bin"].kind == "controlnet"
    assert downloads["detection_Resnet50_Final.pth"].url.startswith("https://github.com/xinntao/facexlib/")
    demo = planning.build_plan("d", finalized(base_model_name=DEMO_CHECKPOINT, controlnet_image=[item()]))
    assert catalog.plan_files(demo) == []  # the demo model's files are generated
    (tmp_path / "models" / "controlnet").mkdir(parents=True)
    (tmp_path / "models" / "controlnet" / "fooocus_ip_negative.safetensors").write_bytes(b"x")
    names = catalog.installed([], check_image_prompt_files=True).image_prompt_files
    assert names == frozenset({"fooocus_ip_negative.safetensors"})
    assert catalog.installed([]).image_prompt_files is None
