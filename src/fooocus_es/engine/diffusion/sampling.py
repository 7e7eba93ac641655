"""Shared by text-to-image and image-to-image: hooks, the step callback, prompt encodings, latents <-> pixels.

One image is denoised per pipeline call; `StepCallback` reports each completed step and raises
`Aborted` when the caller stops or skips, so no half-finished image is ever decoded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch
from diffusers import StableDiffusionXLPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from PIL import Image

from fooocus_es.engine.diffusion.guided_unet import GuidanceSettings, wrap_unet
from fooocus_es.engine.diffusion.preview import latent_preview_jpeg
from fooocus_es.engine.diffusion.text_encoding import Conditioning, encode_conditioning
from fooocus_es.engine.planning.plan_types import GenerationPlan

if TYPE_CHECKING:
    from fooocus_es.engine.diffusion.image_prompts import ImagePromptHooks

Control = Literal["stop", "skip"]
Status = Literal["finished", "stopped"]


class GenerationHooks(Protocol):
    """The engine's view of its caller: progress out, control in. Called on the engine's thread."""

    def on_step(self, image_index: int, step: int, steps: int, preview_jpeg: bytes | None) -> None:
        """After each completed step; `step` is 1-based, `preview_jpeg` None when previews are off."""

    def poll_control(self) -> Control | None:
        """Asked after every step: "skip" abandons the current image, "stop" the whole task."""


def preview_wanted(hooks: GenerationHooks, image_index: int) -> bool:
    """Whether to make this step's preview: hooks may pace them (`wants_preview`; the runner's give
    at most the stream rate, since a faster preview is never shown); without it, every step."""
    wants = getattr(hooks, "wants_preview", None)
    return True if wants is None else bool(wants(image_index))


@dataclass(frozen=True)
class GeneratedImage:
    image_index: int  # position in plan.seeds
    seed: int
    image: Image.Image  # RGB
    prompt_expansion: str = ""  # Fooocus V2's text for this image, for the metadata ("" = none)


class GenerationFailed(Exception):
    """The plan cannot run on this model/engine; the message says why, for the task's error."""


class Aborted(Exception):
    """Raised inside the step callback to leave diffusers' loop at once (no decode of a half image)."""

    def __init__(self, action: Control) -> None:
        super().__init__(action)
        self.action = action


class ConditioningCache:
    """Prompt encodings of one task and one set of text encoders, reused across images with equal prompts."""

    def __init__(self, pipe: StableDiffusionXLPipeline, clip_skip: int) -> None:
        self.pipe = pipe
        self.clip_skip = clip_skip
        self._cache: dict[tuple[tuple[str, ...], tuple[str, ...]], Conditioning] = {}

    def get(self, positive: tuple[str, ...], negative: tuple[str, ...], expansion: str = "") -> Conditioning:
        """`expansion` (Fooocus V2) is encoded as one more positive part, outside the pooled sum."""
        key = (positive + (expansion,) if expansion else positive, negative)
        if key not in self._cache:
            self._cache[key] = encode_conditioning(
                self.pipe, key[0], negative, clip_skip=self.clip_skip,
                positive_pool_top_k=len(positive) if expansion else None,
            )  # fmt: skip
        return self._cache[key]

    def for_image(self, plan: GenerationPlan, index: int) -> Conditioning:
        return self.get(*prompt_parts(plan, index), plan.expansion_for(index))

    def pipeline_kwargs(self, plan: GenerationPlan, index: int) -> dict[str, torch.Tensor]:
        """Image `index`'s four conditioning tensors, as diffusers' SDXL pipelines take them."""
        cond = self.for_image(plan, index)
        return {
            "prompt_embeds": cond.prompt_embeds,
            "pooled_prompt_embeds": cond.pooled_prompt_embeds,
            "negative_prompt_embeds": cond.negative_prompt_embeds,
            "negative_pooled_prompt_embeds": cond.negative_pooled_prompt_embeds,
        }


def prompt_parts(plan: GenerationPlan, index: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Image `index`'s prompt parts (without the V2 expansion); plans built without parts encode their joined texts."""
    positive = plan.prompt_parts[index] if index < len(plan.prompt_parts) else (plan.prompt_for(index),)
    negative = (
        plan.negative_prompt_parts[index]
        if index < len(plan.negative_prompt_parts)
        else (plan.negative_prompt_for(index),)
    )
    return positive, negative


def guidance_settings(plan: GenerationPlan) -> GuidanceSettings:
    """The plan's guidance parameters, as GuidedUNet and the batch denoiser take them."""
    return GuidanceSettings(
        guidance_scale=plan.guidance_scale,
        adaptive_cfg=plan.adaptive_cfg,
        sharpness=plan.sharpness,
        adm_scaler_positive=plan.adm_scaler_positive,
        adm_scaler_negative=plan.adm_scaler_negative,
        adm_scaler_end=plan.adm_scaler_end,
    )


def task_pipeline(
    pipe: StableDiffusionXLPipeline,
    scheduler: SchedulerMixin,
    guidance: GuidanceSettings,
    vae: Any,
    pipeline_class: type[Any] = StableDiffusionXLPipeline,
    image_prompts: ImagePromptHooks | None = None,
) -> Any:
    """A pipeline sharing `pipe`'s models but with its own scheduler, guided UNet and VAE.

    The cached pipeline stays untouched (the GuidedUNet holds per-task settings and image prompts).
    Built directly rather than with `from_pipe`, which also re-casts every model and logs about it.
    """
    try:  # the bare UNet when every extra is off; ValueError for schedulers it cannot follow (EDM)
        unet = wrap_unet(pipe.unet, guidance, scheduler, pipe.vae_scale_factor, image_prompts)
    except ValueError as exc:
        raise GenerationFailed(str(exc)) from exc
    task_pipe = pipeline_class(
        **{**pipe.components, "scheduler": scheduler, "unet": unet, "vae": vae},
        force_zeros_for_empty_prompt=pipe.config.force_zeros_for_empty_prompt,
        add_watermarker=False,
    )
    task_pipe.set_progress_bar_config(disable=True)
    return task_pipe


class StepCallback:
    """diffusers' `callback_on_step_end`: reports completed steps, then asks whether to go on.

    Second-order schedulers (Heun, DPM2, DPM++ SDE) call back twice per step; like diffusers'
    own progress bar, a step counts as done every `scheduler.order` calls and at the last one.
    """

    def __init__(
        self,
        hooks: GenerationHooks,
        image_index: int,
        steps: int,
        preview: bool,
        *,
        switch_at: int | None = None,
        on_switch: Callable[[StableDiffusionXLPipeline, int, dict[str, torch.Tensor]], None] | None = None,
        blend: Callable[[StableDiffusionXLPipeline, int, dict[str, torch.Tensor]], None] | None = None,
        offset: int = 0,
        total: int | None = None,
    ) -> None:
        self.hooks = hooks
        self.image_index = image_index
        self.steps = steps
        self.preview = preview
        self.switch_at = switch_at
        self.on_switch = on_switch
        self.blend = blend  # called after every scheduler call (inpainting keeps the unmasked latents)
        self.offset = offset  # steps reported by earlier pipeline calls of the same image (tiles)
        self.total = total if total is not None else steps
        self.done = 0

    def __call__(
        self, pipe: StableDiffusionXLPipeline, i: int, t: Any, tensors: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        if self.blend is not None:
            self.blend(pipe, i, tensors)
        if not (i == pipe.num_timesteps - 1 or (i + 1) % pipe.scheduler.order == 0):
            return tensors
        self.done += 1
        wanted = self.preview and preview_wanted(self.hooks, self.image_index)
        jpeg = latent_preview_jpeg(tensors["latents"]) if wanted else None
        self.hooks.on_step(self.image_index, self.offset + self.done, self.total, jpeg)
        action = self.hooks.poll_control()
        if action is not None:
            raise Aborted(action)
        if self.on_switch is not None and self.done == self.switch_at:
            self.on_switch(pipe, self.image_index, tensors)
        return tensors


def check_finite(latents: torch.Tensor) -> None:
    """Decoding NaN/inf latents would give a black image; say what happened instead."""
    if not torch.isfinite(latents).all():
        raise GenerationFailed("denoising produced non-finite latents (NaN/inf); try another sampler or float32")


def decode_latents(pipe: StableDiffusionXLPipeline, vae: Any, latents: torch.Tensor) -> Image.Image:
    """Latents -> RGB image, as the SDXL pipeline decodes (float32 VAE when it would overflow)."""
    return decode_latents_batch(pipe, vae, latents)[0]


def decode_latents_batch(pipe: StableDiffusionXLPipeline, vae: Any, latents: torch.Tensor) -> list[Image.Image]:
    """(n, C, h, w) latents -> n RGB images in one VAE call (fp16 overflow and broken samplers raise)."""
    check_finite(latents)
    if vae.dtype == torch.float16 and vae.config.force_upcast:
        vae.float()  # left in float32: the store keeps it that way anyway (see ModelStore._load)
    latents = unscale_latents(latents.to(device=vae.device, dtype=vae.dtype), vae)
    decoded = vae.decode(latents, return_dict=False)[0]
    return [image.convert("RGB") for image in pipe.image_processor.postprocess(decoded, output_type="pil")]


def _latent_stats(vae: Any, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    mean, std = vae.config.get("latents_mean"), vae.config.get("latents_std")
    if mean is None or std is None:
        return None
    as_tensor = {"device": like.device, "dtype": like.dtype}
    return torch.tensor(mean, **as_tensor).view(1, -1, 1, 1), torch.tensor(std, **as_tensor).view(1, -1, 1, 1)


def unscale_latents(latents: torch.Tensor, vae: Any) -> torch.Tensor:
    """Diffusion latents -> the VAE decoder's input (Playground-style VAEs also normalise theirs)."""
    stats = _latent_stats(vae, latents)
    if stats is None:
        return latents / vae.config.scaling_factor
    mean, std = stats
    return latents * std / vae.config.scaling_factor + mean


def scale_latents(latents: torch.Tensor, vae: Any) -> torch.Tensor:
    """The VAE encoder's output -> diffusion latents (inverse of unscale_latents)."""
    stats = _latent_stats(vae, latents)
    if stats is None:
        return latents * vae.config.scaling_factor
    mean, std = stats
    return (latents - mean) * vae.config.scaling_factor / std
