"""Fooocus's image prompts on the project's UNet wrapper: IP-Adapter tokens and ControlNet residuals.

One `ImagePromptHooks` per task, built before any denoising from the plan's image prompts:

- ImagePrompt / FaceSwap: the input (FaceSwap: its face, aligned) stretched to 224, encoded by CLIP
  ViT-H and the task's IP-Adapter into per-layer keys and values once; every attn2 call then
  joins them to the text keys (ip_adapter.py, Fooocus's formula, not diffusers' decoupled one).
- PyraCanny / CPDS: the hint (pyramid Canny or CPDS of the input, resized to cover the working
  size) goes through a ControlNet of the running base model on every UNet call; its residuals,
  softened and weighted, summed over the controls, are added to the UNet's skip connections.

Fooocus's "stop at" is a timestep rule checked on every UNet call: a prompt is active while
t >= 999 * (1 - stop), so second-order samplers and image tasks (whose schedules start late)
follow it exactly. Below every threshold the UNet call is the plain one, bit for bit.
`GuidedUNet` calls `unet_call`; the refiner's UNet never gets the hooks (Fooocus drops image
prompts at the switch), and neither does anything outside the base model's sampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fooocus_es.engine.diffusion.control_residuals import ActiveControl, control_residuals
from fooocus_es.engine.diffusion.image_prompt_models import ImagePromptModels
from fooocus_es.engine.diffusion.ip_adapter import IPAttention, IPTokens
from fooocus_es.engine.imaging import cn_preprocess
from fooocus_es.engine.planning.demo_names import DEMO_CHECKPOINT
from fooocus_es.engine.planning.plan_types import ControlSettings, GenerationPlan, ImagePrompt

Tensor = torch.Tensor
NUM_TRAIN_TIMESTEPS_MAX = 999  # Fooocus's "stop at" maps to the timestep (1 - stop) * 999


def active_until(stop: float) -> float:
    """The lowest model timestep at which a prompt with this `stop` still acts."""
    return NUM_TRAIN_TIMESTEPS_MAX * (1.0 - stop)


@dataclass
class ControlPrompt:
    """One PyraCanny / CPDS prompt: its ControlNet, input image and, per working size, its active control."""

    model: Any  # diffusers ControlNetModel built on the running base model
    prompt: ImagePrompt
    image: np.ndarray  # the input, RGB uint8 at its own size
    by_size: dict[tuple[int, int], ActiveControl] = field(default_factory=dict)  # (height, width) in pixels


class ImagePromptHooks:
    """One task's image prompts, applied around each base-model UNet call (GuidedUNet)."""

    def __init__(
        self,
        ip_tokens: Sequence[IPTokens],
        ip_attention: IPAttention | None,
        controls: Sequence[ControlPrompt],
        settings: ControlSettings,
    ) -> None:
        self.ip_tokens = tuple(ip_tokens)
        self.ip_attention = ip_attention
        # cn_weight 0 skips a ControlNet entirely (for IP-Adapters weight 0 still joins the softmax).
        self.controls = tuple(control for control in controls if control.prompt.weight != 0)
        self.settings = settings

    def unet_call(
        self,
        unet: Any,
        sample: Tensor,
        timestep: Any,
        t: Tensor,
        split: bool,
        encoder_hidden_states: Tensor,
        args: tuple[Any, ...],
        added_cond_kwargs: dict[str, Tensor] | None,
        kwargs: dict[str, Any],
    ) -> Tensor:
        """`unet(sample, ...)` with this call's active image prompts; `split`: rows are [uncond; cond]."""
        now = float(t)
        tokens = [tok for tok in self.ip_tokens if now >= active_until(tok.stop)]
        controls = [
            self._active_control(control, sample)
            for control in self.controls
            if now >= active_until(control.prompt.stop)
        ]
        if controls:
            residuals = control_residuals(controls, sample, timestep, encoder_hidden_states, added_cond_kwargs)
            if residuals is not None:
                down, mid = residuals
                kwargs = {**kwargs, "down_block_additional_residuals": down, "mid_block_additional_residual": mid}

        def call() -> Tensor:
            return unet(
                sample, timestep, encoder_hidden_states, *args,
                added_cond_kwargs=added_cond_kwargs, return_dict=False, **kwargs,
            )[0]  # fmt: skip

        if tokens and self.ip_attention is not None:
            with self.ip_attention.active(tokens, split):
                return call()
        return call()

    def _active_control(self, control: ControlPrompt, sample: Tensor) -> ActiveControl:
        """The control at this call's pixel size (latents x 8), its hint preprocessed at that size as Fooocus does."""
        key = (sample.shape[-2] * 8, sample.shape[-1] * 8)
        if key not in control.by_size:
            s = self.settings
            pixels = cn_preprocess.control_hint(
                control.prompt.cn_type, control.image, key[1], key[0],
                canny_low=s.canny_low, canny_high=s.canny_high, skip=s.skip_preprocessor,
            )  # fmt: skip
            hint = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None].float() / 255.0
            control.by_size[key] = ActiveControl(
                model=control.model, hint=hint, weight=control.prompt.weight, softness=s.softness
            )
        return control.by_size[key]


def _input_image(prompt: ImagePrompt, data_dir: Path) -> np.ndarray:
    from fooocus_es.engine.imaging.inputs import load_rgb

    return load_rgb(data_dir / prompt.image)


def _ip_input(prompt: ImagePrompt, image: np.ndarray, models: ImagePromptModels, settings: ControlSettings,
              demo: bool) -> np.ndarray:  # fmt: skip
    """The 224x224 image an IP-Adapter encodes: FaceSwap's aligned face unless preprocessing is skipped."""
    if prompt.cn_type == "FaceSwap" and not settings.skip_preprocessor:
        from fooocus_es.engine.imaging.face_crop import crop_face

        image = crop_face(models.face_detector(demo=demo), image)
    return cn_preprocess.ip_input(image)


def preprocessed_images(plan: GenerationPlan, models: ImagePromptModels, data_dir: Path) -> list[np.ndarray]:
    """debugging_cn_preprocessor: what each image prompt feeds its model (IP: the 224 image), RGB uint8."""
    demo = plan.base_model == DEMO_CHECKPOINT
    s = plan.control
    out = []
    for prompt in plan.image_prompts:
        image = _input_image(prompt, data_dir)
        if prompt.is_control:
            out.append(cn_preprocess.control_hint(
                prompt.cn_type, image, plan.width, plan.height,
                canny_low=s.canny_low, canny_high=s.canny_high, skip=s.skip_preprocessor,
            ))  # fmt: skip
        else:
            out.append(_ip_input(prompt, image, models, s, demo))
    return out


def build_hooks(plan: GenerationPlan, models: ImagePromptModels, unet: Any, data_dir: Path) -> ImagePromptHooks | None:
    """The task's hooks for the base `unet` (bare, not wrapped); None without image prompts.

    Everything is loaded and encoded here, before the first step: the IP tokens once per task, the
    ControlNets from the base UNet's weights before an inpaint patch is applied to them.
    """
    if not plan.image_prompts:
        return None
    from fooocus_es.engine.models.clip_vision import clip_pixels, image_hidden_states

    demo = plan.base_model == DEMO_CHECKPOINT
    tokens: list[IPTokens] = []
    controls: list[ControlPrompt] = []
    attention = None
    with torch.inference_mode():
        for prompt in plan.image_prompts:
            image = _input_image(prompt, data_dir)
            if prompt.is_control:
                controls.append(ControlPrompt(models.control_model(prompt.cn_type, unet, demo=demo), prompt, image))
                continue
            clip = models.clip_vision(demo=demo)
            adapter = models.ip_adapter(prompt.cn_type, unet, demo=demo)
            pixels = clip_pixels(_ip_input(prompt, image, models, plan.control, demo), models.device, models.dtype)
            tokens.append(adapter.tokens(image_hidden_states(clip, pixels), prompt.weight, prompt.stop))
            attention = IPAttention.install(unet)
    return ImagePromptHooks(tokens, attention, controls, plan.control)


def load_for(plan: GenerationPlan, models: ImagePromptModels, unet: Any) -> None:
    """Load (or find cached) every model the plan's image prompts use: missing files fail before any progress."""
    demo = plan.base_model == DEMO_CHECKPOINT
    for prompt in plan.image_prompts:
        if prompt.is_control:
            models.control_model(prompt.cn_type, unet, demo=demo)
            continue
        models.clip_vision(demo=demo)
        models.ip_adapter(prompt.cn_type, unet, demo=demo)
        if prompt.cn_type == "FaceSwap" and not plan.control.skip_preprocessor:
            models.face_detector(demo=demo)
