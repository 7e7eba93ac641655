"""Helpers shared by the engine tests: recording hooks, the demo layout on the meta device, a tiny safety checker."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fooocus_es.engine.demo.checkpoint import TINY_CONFIG_DIR

FLAG_ALL, FLAG_NONE = -2.0, 10.0  # safety-checker concept thresholds every / no cosine distance passes


@dataclass
class Hooks:
    """GenerationHooks that record every step and never stop or skip."""

    steps: list[tuple[int, int, int]] = field(default_factory=list)

    def on_step(self, image_index: int, step: int, steps: int, preview_jpeg: bytes | None) -> None:
        self.steps.append((image_index, step, steps))

    def poll_control(self) -> str | None:
        return None


@dataclass
class CallSizes:
    """Batch sizes of the UNet's calls and of the VAE decoder's, in order."""

    unet: list[int] = field(default_factory=list)
    decoder: list[int] = field(default_factory=list)


@contextmanager
def call_sizes(pipe: Any) -> Iterator[CallSizes]:
    """Record the batch size of every UNet and VAE-decoder call of `pipe` while the block runs."""
    sizes = CallSizes()
    handles = [
        pipe.unet.register_forward_pre_hook(lambda _module, args: sizes.unet.append(args[0].shape[0])),
        pipe.vae.decoder.register_forward_pre_hook(lambda _module, args: sizes.decoder.append(args[0].shape[0])),
    ]
    try:
        yield sizes
    finally:
        for handle in handles:
            handle.remove()


def meta_demo_models() -> dict[str, torch.nn.Module]:
    """The demo layout (names and shapes only) for writing LoRAs: no memory, no RNG use."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with torch.device("meta"):
        return {
            "unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(TINY_CONFIG_DIR / "unet")),
            "te1": CLIPTextModel(CLIPTextConfig.from_pretrained(TINY_CONFIG_DIR / "text_encoder")),
            "te2": CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(TINY_CONFIG_DIR / "text_encoder_2")),
        }


def write_safety_checker(folder: Path, threshold: float) -> Path:
    """A tiny StableDiffusionSafetyChecker with fixed random weights and every concept at `threshold`."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessorPil

    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4},
        vision_config={
            "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
            "image_size": 32, "patch_size": 8,
        },
        projection_dim=16,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        checker = StableDiffusionSafetyChecker(config).eval()
        with torch.no_grad():
            checker.concept_embeds.normal_()
            checker.special_care_embeds.normal_()
            checker.concept_embeds_weights.fill_(threshold)
            checker.special_care_embeds_weights.fill_(threshold)
    checker.save_pretrained(folder)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder
