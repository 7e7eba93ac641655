"""Image prompts on GuidedUNet: Fooocus's timestep "stop at" rule, per type and together, on the demo UNet.

The hooks are built the way the engine builds them (demo files written under models/, the input a
PNG under inputs/), then called through GuidedUNet at timesteps either side of 999 * (1 - stop).
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fooocus_es.engine.demo.checkpoint import build_demo_models
from fooocus_es.engine.diffusion import image_prompts
from fooocus_es.engine.diffusion.guided_unet import GuidanceSettings, GuidedUNet
from fooocus_es.engine.diffusion.image_prompt_models import ImagePromptModels
from fooocus_es.engine.planning.demo_names import DEMO_CHECKPOINT
from fooocus_es.engine.planning.plan_types import ControlSettings, GenerationPlan, ImagePrompt

F32 = torch.float32
STOP = 0.5  # active while t >= 499.5
ABOVE, BELOW = 700, 300


@pytest.fixture(scope="module")
def unet():
    return build_demo_models()["unet"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ip-hooks")
    (root / "inputs").mkdir()
    ys, xs = np.mgrid[0:96, 0:128]
    image = np.stack([xs * 2, ys * 2, ((xs // 16 + ys // 16) % 2) * 255], axis=-1).astype(np.uint8)
    Image.fromarray(image).save(root / "inputs" / "prompt.png")
    return root


@pytest.fixture(scope="module")
def models(data_dir: Path) -> ImagePromptModels:
    return ImagePromptModels(data_dir / "models", "cpu", F32, construction=threading.RLock())


def plan_with(*prompts: ImagePrompt, **control: object) -> GenerationPlan:
    return GenerationPlan(
        task_id="t", prompt="p", negative_prompt="", width=64, height=64, steps=4, guidance_scale=4.0,
        seeds=(1,), base_model=DEMO_CHECKPOINT, image_prompts=prompts, control=ControlSettings(**control),
    )  # fmt: skip


def prompt(cn_type: str, *, stop: float = STOP, weight: float = 1.0) -> ImagePrompt:
    return ImagePrompt(cn_type=cn_type, image="inputs/prompt.png", stop=stop, weight=weight)


def call(unet, hooks, t: int, seed: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    rows = 2  # [uncond; cond]
    inputs = {
        "sample": torch.randn(rows, 4, 8, 8, generator=generator),
        "timestep": torch.tensor(t),
        "encoder_hidden_states": torch.randn(rows, 7, 80, generator=generator),
        "added_cond_kwargs": {
            "text_embeds": torch.randn(rows, 32, generator=generator),
            "time_ids": torch.tensor([[64, 64, 0, 0, 64, 64]] * rows, dtype=F32),
        },
    }
    wrapped = GuidedUNet(unet, GuidanceSettings.off(4.0), None, image_prompts=hooks)
    with torch.inference_mode():
        return wrapped(**inputs, return_dict=False)[0]


@pytest.mark.parametrize("types", [("ImagePrompt",), ("FaceSwap",), ("PyraCanny",), ("CPDS",), ("ImagePrompt", "CPDS")])
def test_image_prompts_act_above_the_stop_and_are_bit_equal_below(unet, models, data_dir, types) -> None:
    own = copy.deepcopy(unet)  # IP processors get installed on it
    hooks = image_prompts.build_hooks(plan_with(*(prompt(t) for t in types)), models, own, data_dir)
    assert hooks is not None
    plain_above, plain_below = call(unet, None, ABOVE), call(unet, None, BELOW)
    prompted_above = call(own, hooks, ABOVE)
    assert (prompted_above - plain_above).abs().max() > 1e-4, "an active image prompt must change the UNet output"
    assert torch.equal(call(own, hooks, BELOW), plain_below), "past its stop the call is the plain one, bit for bit"
    assert torch.equal(call(own, None, ABOVE), plain_above), "installed IP layers are inert outside a hooked call"


def test_each_prompt_follows_its_own_stop(unet, models, data_dir) -> None:
    own = copy.deepcopy(unet)
    late = image_prompts.build_hooks(plan_with(prompt("PyraCanny", stop=0.9), prompt("ImagePrompt")), models, own,
                                     data_dir)  # fmt: skip
    canny_only = image_prompts.build_hooks(plan_with(prompt("PyraCanny", stop=0.9)), models, own, data_dir)
    # At t=300 the ImagePrompt (stop 0.5, active down to 499.5) is off and PyraCanny (stop 0.9: down to 99.9) on.
    assert torch.equal(call(own, late, BELOW), call(own, canny_only, BELOW))
    assert not torch.equal(call(own, late, ABOVE), call(own, canny_only, ABOVE))


def test_controlnet_weight_zero_skips_it(unet, models, data_dir) -> None:
    hooks = image_prompts.build_hooks(plan_with(prompt("CPDS", weight=0.0)), models, unet, data_dir)
    assert hooks is not None and hooks.controls == ()
    assert torch.equal(call(unet, hooks, ABOVE), call(unet, None, ABOVE))


def test_control_hint_is_preprocessed_once_per_working_size(unet, models, data_dir) -> None:
    hooks = image_prompts.build_hooks(plan_with(prompt("PyraCanny")), models, unet, data_dir)
    first = call(unet, hooks, ABOVE)
    assert torch.equal(call(unet, hooks, ABOVE), first)  # deterministic, and the cached hint is the same
    (control,) = hooks.controls
    assert list(control.by_size) == [(64, 64)]  # latents 8x8 -> hint 64x64, made from the 128x96 input once
    hint = control.by_size[(64, 64)].hint
    assert hint.shape == (1, 3, 64, 64) and float(hint.min()) >= 0.0 and float(hint.max()) <= 1.0


def test_thresholds_and_skipping_change_the_hint(unet, models, data_dir) -> None:
    def hint(**control: object) -> torch.Tensor:
        hooks = image_prompts.build_hooks(plan_with(prompt("PyraCanny"), **control), models, unet, data_dir)
        call(unet, hooks, ABOVE)
        return hooks.controls[0].by_size[(64, 64)].hint

    default = hint()
    assert not torch.equal(default, hint(canny_low=10, canny_high=20))
    skipped = hint(skip_preprocessor=True)  # the input itself, covered and cropped to 64x64
    assert not torch.equal(default, skipped) and skipped.std() > 0.05


def test_no_image_prompts_no_hooks(unet, models, data_dir) -> None:
    assert image_prompts.build_hooks(plan_with(), models, unet, data_dir) is None
