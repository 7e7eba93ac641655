"""Every generation knob on the tiny demo SDXL: it changes the pixels when it should, and leaves them
bit-identical when it should not (including after other tasks changed the shared models' state).

Requests go through the real planning rules (merge_layers -> finalize -> build_plan), so the knobs
are the FooocusAPI fields a client sends. 64x64, 2 steps, guidance 4: every image takes well under
a second on a CPU; one module-wide engine keeps its pipelines cached between tests.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from engine_helpers import FLAG_ALL, Hooks, meta_demo_models, write_safety_checker
from safetensors.torch import load_file, save_file

from fooocus_es.engine.demo.checkpoint import build_demo_models
from fooocus_es.engine.demo.loras import write_kohya_lora
from fooocus_es.engine.diffusion.pipeline import Engine, GenerationFailed
from fooocus_es.engine.models.ldm_convert import UNET_PREFIX, save_checkpoint, vae_to_ldm
from fooocus_es.engine.models.store import ModelMissing, ModelStore
from fooocus_es.engine.planning import plan as planning
from fooocus_es.engine.planning.demo_names import DEMO_CHECKPOINT, DEMO_PERFORMANCE_LORAS
from fooocus_es.engine.planning.performance import PERFORMANCE_LORAS, forced_overrides
from fooocus_es.engine.planning.plan_types import GenerationPlan

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Should have t[ab]"),  # torchsde's Brownian tree at sigma_min
]

PROMPT = "a photo of a cat"
REFINER = "refiner_demo.safetensors"  # the demo checkpoint with its UNet perturbed
NOT_SDXL = "sd15_like.safetensors"  # an SD 1.5-shaped UNet: no SDXL size embedding
NO_UNET = "not_a_checkpoint.safetensors"  # a LoRA-like file: no UNet at all
VAE_SAME = "same_vae.safetensors"  # the demo checkpoint's own VAE, as a separate file
VAE_OTHER = "other_vae.safetensors"  # the same with perturbed decoder weights
FEW_LAYERS = ("attn1.to_k", "attn2.to_v")  # peft injection time grows with the adapted layers


def _write_refiner(path: Path, demo: Path) -> None:
    """A second SDXL checkpoint of the demo's architecture: its UNet and text encoder weights moved
    by a fixed noise (the VAE stays the demo's)."""
    state = load_file(str(demo))
    generator = torch.Generator().manual_seed(99)
    for key, tensor in state.items():
        moved = key.startswith(UNET_PREFIX) or (key.startswith("conditioner.") and "embedding" not in key)
        if moved and tensor.is_floating_point():
            state[key] = tensor + 0.05 * torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
    save_file(state, str(path), metadata={"format": "pt"})


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, demo_models: Path) -> Path:
    """A models/ folder of this module's own: the demo checkpoint and the files the tests add."""
    folder = tmp_path_factory.mktemp("feature-data") / "models"  # data dir: its parent
    demo = folder / "checkpoints" / DEMO_CHECKPOINT
    demo.parent.mkdir(parents=True)
    shutil.copyfile(demo_models / "checkpoints" / DEMO_CHECKPOINT, demo)
    _write_refiner(folder / "checkpoints" / REFINER, demo)
    sd15_unet = {
        UNET_PREFIX + "input_blocks.0.0.weight": torch.zeros(32, 4, 3, 3),
        UNET_PREFIX + "input_blocks.0.0.bias": torch.zeros(32),
    }
    save_checkpoint(sd15_unet, folder / "checkpoints" / NOT_SDXL)
    save_checkpoint({"lora_unet_x.lora_down.weight": torch.zeros(4, 4)}, folder / "checkpoints" / NO_UNET)
    meta = meta_demo_models()
    loras = folder / "loras"
    write_kohya_lora(loras / "a.safetensors", meta["unet"], seed=1, scale=0.2, unet_targets=FEW_LAYERS,
                     text_encoders=[meta["te1"], meta["te2"]])  # fmt: skip
    write_kohya_lora(loras / "b.safetensors", meta["unet"], seed=2, scale=0.2, unet_targets=FEW_LAYERS)
    vae = build_demo_models()["vae"]
    ldm = vae_to_ldm(vae.state_dict(), vae.config)
    save_checkpoint(ldm, folder / "vae" / VAE_SAME)
    generator = torch.Generator().manual_seed(5)
    perturbed = {
        key: tensor + 0.05 * torch.randn(tensor.shape, generator=generator) if key.startswith("decoder.") else tensor
        for key, tensor in ldm.items()
    }
    save_checkpoint(perturbed, folder / "vae" / VAE_OTHER)
    return folder


@pytest.fixture(scope="module")
def engine(models: Path) -> Engine:
    # One thread: on a shared 2-core machine a second one mostly spin-waits (up to 10x slower here).
    torch.set_num_threads(1)
    # A budget that holds base, refiner and VAEs: no reloads between tests (the memory test covers those).
    return Engine(ModelStore(models, cache_bytes=10**9), models.parent)


def plan_for(models: Path, **sent: Any) -> GenerationPlan:
    body = {
        "base_model_name": DEMO_CHECKPOINT,
        "prompt": PROMPT,
        "negative_prompt": "blurry",
        "image_seed": 11,
        "overwrite_step": 2,
        "overwrite_width": 64,
        "overwrite_height": 64,
        "guidance_scale": 4.0,
        "style_selections": [],
    }
    params = planning.finalize(planning.merge_layers({**body, **sent}))
    return planning.build_plan("t", params, data_dir=models.parent)


def images_of(engine: Engine, plan: GenerationPlan) -> list[np.ndarray]:
    images, status = engine.generate(plan, Hooks())
    assert status == "finished"
    assert [image.seed for image in images] == list(plan.seeds)
    return [np.asarray(image.image) for image in images]


def run(engine: Engine, models: Path, **sent: Any) -> np.ndarray:
    """The first image of a request."""
    return images_of(engine, plan_for(models, **sent))[0]


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a, b)


@pytest.fixture(scope="module")
def baseline(engine: Engine, models: Path) -> np.ndarray:
    """The plain request's image, from the first task the engine runs."""
    return run(engine, models)


# -- seeds -----------------------------------------------------------------------------------------
def test_same_seed_same_pixels_and_image_number_increments_the_seed(
    engine: Engine, models: Path, baseline: np.ndarray
) -> None:
    assert baseline.shape == (64, 64, 3)
    assert same(run(engine, models), baseline)
    plan = plan_for(models, image_number=3)
    assert plan.seeds == (11, 12, 13)
    three = images_of(engine, plan)
    assert same(three[0], baseline)
    assert not same(three[0], three[1]) and not same(three[1], three[2])
    # Each image depends only on its own seed, not on its place in the batch.
    assert same(three[2], run(engine, models, image_seed=13))
    plan = plan_for(models, image_number=3, disable_seed_increment=True)
    assert plan.seeds == (11, 11, 11)
    fixed = images_of(engine, plan)
    assert all(same(image, baseline) for image in fixed)


# -- guidance --------------------------------------------------------------------------------------
def test_sharpness_changes_the_image(engine: Engine, models: Path, baseline: np.ndarray) -> None:
    sharp0 = run(engine, models, sharpness=0.0)
    assert not same(sharp0, baseline)  # the default sharpness is 2
    assert not same(run(engine, models, sharpness=10.0), baseline)
    assert same(run(engine, models, sharpness=2.0), baseline)


# -- LoRAs -----------------------------------------------------------------------------------------
def lora(name: str, weight: float) -> dict[str, Any]:
    return {"enabled": True, "model_name": name, "weight": weight}


def test_lora_weight_zero_is_no_lora_and_nonzero_changes_the_image(
    engine: Engine, models: Path, baseline: np.ndarray
) -> None:
    assert same(run(engine, models, loras=[lora("a.safetensors", 0.0)]), baseline)
    with_a = run(engine, models, loras=[lora("a.safetensors", 0.8)])
    assert not same(with_a, baseline)
    disabled = run(engine, models, loras=[{"enabled": False, "model_name": "a.safetensors", "weight": 0.8}])
    assert same(disabled, baseline)


def test_no_stale_lora_weights_across_tasks(engine: Engine, models: Path, baseline: np.ndarray) -> None:
    first_a = run(engine, models, loras=[lora("a.safetensors", 0.8)])
    assert same(run(engine, models), baseline)  # a task without LoRAs: every adapter off
    both = run(engine, models, loras=[lora("a.safetensors", 0.8), lora("b.safetensors", 0.8)])
    assert not same(both, first_a)
    only_b = run(engine, models, loras=[lora("b.safetensors", 0.8)])
    assert not same(only_b, both) and not same(only_b, first_a)
    assert same(run(engine, models, loras=[lora("a.safetensors", 0.8)]), first_a)
    assert not same(run(engine, models, loras=[lora("a.safetensors", 0.4)]), first_a)  # the weight counts


def test_a_kohya_lora_written_into_models_loras_loads_by_name(engine: Engine, models: Path) -> None:
    meta = meta_demo_models()
    write_kohya_lora(
        models / "loras" / "my_style.safetensors", meta["unet"], seed=7, scale=0.2, unet_targets=FEW_LAYERS
    )
    assert "my_style.safetensors" in engine.store.list_loras()
    styled = run(engine, models, loras=[lora("my_style.safetensors", 1.0)])
    assert not same(styled, run(engine, models))
    with pytest.raises(ModelMissing, match="not_there.safetensors"):
        run(engine, models, loras=[lora("not_there.safetensors", 1.0)])


@pytest.mark.parametrize("performance", ["Extreme Speed", "Lightning", "Hyper-SD"])
def test_few_step_performance_modes_run_with_their_demo_loras(engine: Engine, models: Path, performance: str) -> None:
    plan = plan_for(models, performance_selection=performance)
    demo_lora = DEMO_PERFORMANCE_LORAS[PERFORMANCE_LORAS[performance][0]]
    assert plan.loras == ((demo_lora, PERFORMANCE_LORAS[performance][1]),)
    assert plan.steps == 2  # overwrite_step still wins
    fast = images_of(engine, plan)[0]
    assert (models / "loras" / demo_lora).is_file()  # generated on first use
    assert not same(fast, run(engine, models, performance_selection="Speed"))
    # Speed with the mode's forced sampler and guidance: only the LoRA differs, and it shows.
    forced = {key: value for key, value in forced_overrides(performance).items() if key != "refiner_model_name"}
    speed_alike = run(engine, models, performance_selection="Speed", **forced)
    assert not same(fast, speed_alike)
    assert same(fast, run(engine, models, performance_selection="Speed", **forced,
                          loras=[lora(demo_lora, PERFORMANCE_LORAS[performance][1])]))  # fmt: skip


# -- refiner ---------------------------------------------------------------------------------------
def test_refiner_joint_switch_changes_the_image_and_switch_at_the_end_does_not(
    engine: Engine, models: Path, baseline: np.ndarray
) -> None:
    plan = plan_for(models, refiner_model_name=REFINER, refiner_switch=0.5)
    assert (plan.refiner_model, plan.refiner_switch_step, plan.refiner_swap_method) == (REFINER, 1, "joint")
    hooks = Hooks()
    images, _ = engine.generate(plan, hooks)
    joint = np.asarray(images[0].image)
    assert [step for _, step, _ in hooks.steps] == [1, 2]
    assert not same(joint, baseline)
    assert same(images_of(engine, plan)[0], joint)  # deterministic, and the base UNet came back
    assert same(run(engine, models), baseline)  # the next task without refiner runs on the base again
    at_end = plan_for(models, refiner_model_name=REFINER, refiner_switch=1.0)
    assert at_end.refiner_switch_step == at_end.steps
    assert same(images_of(engine, at_end)[0], baseline)
    # The base model named as its own refiner is no refiner.
    assert plan_for(models, refiner_model_name=DEMO_CHECKPOINT).refiner_model is None


def test_refiner_with_several_images_restores_the_base_between_them(engine: Engine, models: Path) -> None:
    plan = plan_for(models, refiner_model_name=REFINER, refiner_switch=0.5, image_number=2)
    first, second = images_of(engine, plan)
    assert same(second, run(engine, models, refiner_model_name=REFINER, refiner_switch=0.5, image_seed=12))
    assert not same(first, second)


def test_image_prompts_act_on_the_base_steps_and_are_dropped_at_the_refiner_switch(
    engine: Engine, models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    from fooocus_es.engine.diffusion.image_prompts import ImagePromptHooks

    inputs = models.parent / "inputs"
    inputs.mkdir(exist_ok=True)
    ramp = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (64, 1, 3))
    Image.fromarray(ramp).save(inputs / "cn.png")
    seen: list[float] = []
    original = ImagePromptHooks.unet_call

    def spy(self, unet, sample, timestep, t, *rest):  # type: ignore[no-untyped-def]
        seen.append(float(t))
        return original(self, unet, sample, timestep, t, *rest)

    monkeypatch.setattr(ImagePromptHooks, "unet_call", spy)
    cn = [{"cn_img": "inputs/cn.png", "cn_stop": 1.0, "cn_weight": 1.0, "cn_type": "PyraCanny"}]
    refined = run(engine, models, refiner_model_name=REFINER, refiner_switch=0.5)
    prompted = run(engine, models, refiner_model_name=REFINER, refiner_switch=0.5, controlnet_image=cn)
    # 2 steps, switch after 1: only the base step's UNet calls (one per sampler evaluation) are hooked.
    assert seen and len(set(seen)) == 1, seen
    assert not same(prompted, refined)
    seen.clear()
    run(engine, models, controlnet_image=cn)
    assert len(set(seen)) == 2  # without a refiner both steps are hooked


@pytest.mark.parametrize("method", ["separate", "vae"])
def test_refiner_separate_and_vae_swaps_run(engine: Engine, models: Path, baseline: np.ndarray, method: str) -> None:
    joint = run(engine, models, refiner_model_name=REFINER, refiner_switch=0.5)
    image = run(engine, models, refiner_model_name=REFINER, refiner_switch=0.5, refiner_swap_method=method)
    assert image.shape == (64, 64, 3)
    assert not same(image, baseline)
    # separate: the refiner's own (other) text encoders; vae: the latents also go through both VAEs.
    assert not same(image, joint)
    assert same(run(engine, models, refiner_model_name=REFINER, refiner_switch=0.5, refiner_swap_method=method), image)


def test_a_refiner_of_another_architecture_fails_naming_the_file(engine: Engine, models: Path) -> None:
    with pytest.raises(GenerationFailed) as failed:
        run(engine, models, refiner_model_name=NOT_SDXL)
    assert f"cannot load {NOT_SDXL!r}" in str(failed.value)
    assert "not an SDXL checkpoint" in str(failed.value)
    with pytest.raises(GenerationFailed) as failed:
        run(engine, models, refiner_model_name=NO_UNET)
    assert f"cannot load {NO_UNET!r}" in str(failed.value) and "no SDXL UNet" in str(failed.value)
    assert engine.store.loaded_name == DEMO_CHECKPOINT  # the base stays loaded and usable
    with pytest.raises(ModelMissing, match="nowhere.safetensors"):
        run(engine, models, refiner_model_name="nowhere.safetensors")


# -- VAE -------------------------------------------------------------------------------------------
def test_vae_override(engine: Engine, models: Path, baseline: np.ndarray) -> None:
    assert same(run(engine, models, vae_name="Default (model)"), baseline)
    assert same(run(engine, models, vae_name=VAE_SAME), baseline)  # the same weights from a file
    other = run(engine, models, vae_name=VAE_OTHER)
    assert not same(other, baseline)
    assert same(run(engine, models), baseline)  # the override did not stick to the checkpoint


# -- FreeU -----------------------------------------------------------------------------------------
def test_freeu_changes_the_image_and_does_not_stick_to_the_shared_unet(
    engine: Engine, models: Path, baseline: np.ndarray
) -> None:
    freeu = {"freeu_enabled": True, "freeu_b1": 1.3, "freeu_b2": 1.4, "freeu_s1": 0.9, "freeu_s2": 0.2}
    on = run(engine, models, **freeu)
    assert not same(on, baseline)
    assert same(run(engine, models, **freeu), on)
    assert same(run(engine, models), baseline)  # FreeU off after a FreeU task = a fresh run


# -- text encoding ---------------------------------------------------------------------------------
def test_clip_skip_changes_the_image(engine: Engine, models: Path, baseline: np.ndarray) -> None:
    assert same(run(engine, models, clip_skip=2), baseline)  # the default
    skip1 = run(engine, models, clip_skip=1)
    assert not same(skip1, baseline)
    skip3 = run(engine, models, clip_skip=3)  # the tiny encoders have 3 layers: the first one's output
    assert not same(skip3, baseline) and not same(skip3, skip1)
    # Past the tiny encoders' depth ComfyUI falls back to the last layer with the final norm.
    beyond = run(engine, models, clip_skip=4)
    assert same(run(engine, models, clip_skip=12), beyond)


def test_emphasis_and_long_prompts(engine: Engine, models: Path, baseline: np.ndarray) -> None:
    assert same(run(engine, models, prompt="a photo of a (cat:1.0)"), baseline)  # weight 1 is no emphasis
    assert not same(run(engine, models, prompt="a photo of a (cat:1.5)"), baseline)
    words = [f"word{i}" for i in range(200)]
    tokens = engine.store.load_pipeline(DEMO_CHECKPOINT).tokenizer(" ".join(words))["input_ids"]
    assert len(tokens) > 2 * 77  # three chunks
    short = " ".join(words[:20])
    assert len(engine.store.load_pipeline(DEMO_CHECKPOINT).tokenizer(short)["input_ids"]) < 77
    long_image = run(engine, models, prompt=" ".join(words))
    assert not same(long_image, run(engine, models, prompt=short))  # not truncated to the first chunk


# -- NSFW ------------------------------------------------------------------------------------------
@pytest.fixture
def safety_checker(models: Path) -> Iterator[Path]:
    folder = write_safety_checker(models / "safety_checker", FLAG_ALL)
    yield folder
    shutil.rmtree(folder)
    folder.mkdir()


def test_black_out_nsfw_without_a_checker_fails_clearly(models: Path) -> None:
    # A store of its own: the module's engine may hold a checker loaded by another test.
    engine = Engine(ModelStore(models), models.parent)
    assert not engine.store.safety_checker_installed()
    with pytest.raises(ModelMissing) as missing:
        run(engine, models, black_out_nsfw=True)
    assert "safety_checker" in str(missing.value) and "config.json" in str(missing.value)
    with pytest.raises(planning.ParamError, match="no safety checker is installed"):
        params = planning.finalize(planning.merge_layers({"base_model_name": DEMO_CHECKPOINT, "black_out_nsfw": True}))
        planning.validate_names(params, checkpoints={DEMO_CHECKPOINT}, downloadable=set(), safety_checker=False)


def test_black_out_nsfw_with_a_flag_everything_checker(
    engine: Engine, models: Path, baseline: np.ndarray, safety_checker: Path
) -> None:
    assert engine.store.safety_checker_installed()
    black = images_of(engine, plan_for(models, black_out_nsfw=True, image_number=2))
    assert all(image.shape == (64, 64, 3) and not image.any() for image in black)
    assert same(run(engine, models), baseline)  # only the tasks that ask are checked
