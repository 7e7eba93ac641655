"""GenerationPlan -> images, on diffusers' StableDiffusionXLPipeline.

One image per seed, each denoised separately so that progress, previews, skip and stop work per
image and an image's pixels depend only on (plan, seed), not on its neighbours in the batch.
Denoising returns latents; the VAE decode happens here, only for images that ran to the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from diffusers import StableDiffusionXLPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from PIL import Image

from fooocus_es.engine.guided_unet import GuidanceSettings, wrap_unet
from fooocus_es.engine.models import ModelStore, ModelUnsupported
from fooocus_es.engine.plan_types import GenerationPlan
from fooocus_es.engine.preview import latent_preview_jpeg
from fooocus_es.engine.schedulers import make_scheduler, prepare_for_image, step_eta

Control = Literal["stop", "skip"]
Status = Literal["finished", "stopped"]


class GenerationHooks(Protocol):
    """The engine's view of its caller: progress out, control in. Called on the engine's thread."""

    def on_step(self, image_index: int, step: int, steps: int, preview_jpeg: bytes | None) -> None:
        """After each completed step; `step` is 1-based, `preview_jpeg` None when previews are off."""

    def poll_control(self) -> Control | None:
        """Asked after every step: "skip" abandons the current image, "stop" the whole task."""


@dataclass(frozen=True)
class GeneratedImage:
    image_index: int  # position in plan.seeds
    seed: int
    image: Image.Image  # RGB


class GenerationFailed(Exception):
    """The plan cannot run on this model/engine; the message says why, for the task's error."""


class _Aborted(Exception):
    """Raised inside the step callback to leave diffusers' loop at once (no decode of a half image)."""

    def __init__(self, action: Control) -> None:
        super().__init__(action)
        self.action = action


class Engine:
    """Runs plans on the pipelines of a ModelStore. One engine per device, used from one thread."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store

    def prepare(self, plan: GenerationPlan) -> None:
        """Validate the plan and load its model, so failures surface before any progress is reported."""
        _validate(plan)
        pipe = self._pipeline(plan)
        _with_scheduler(pipe, _scheduler(plan, pipe), _guidance(plan))

    def generate(self, plan: GenerationPlan, hooks: GenerationHooks) -> tuple[list[GeneratedImage], Status]:
        """Images for every seed that was neither skipped nor stopped, and whether the task was stopped."""
        _validate(plan)
        pipe = self._pipeline(plan)
        task_pipe = _with_scheduler(pipe, _scheduler(plan, pipe), _guidance(plan))
        images: list[GeneratedImage] = []
        with torch.inference_mode():
            for index, seed in enumerate(plan.seeds):
                try:
                    latents = _denoise(task_pipe, plan, index, seed, hooks)
                except _Aborted as aborted:
                    if aborted.action == "stop":
                        return images, "stopped"
                    continue  # skip: this image is dropped, the next one starts
                images.append(GeneratedImage(image_index=index, seed=seed, image=_decode(task_pipe, latents)))
        return images, "finished"

    def _pipeline(self, plan: GenerationPlan) -> StableDiffusionXLPipeline:
        try:
            return self.store.load_pipeline(plan.base_model)
        except ModelUnsupported as exc:
            raise GenerationFailed(str(exc)) from exc


def _validate(plan: GenerationPlan) -> None:
    if plan.width <= 0 or plan.height <= 0 or plan.width % 8 or plan.height % 8:
        raise GenerationFailed(f"width and height must be positive multiples of 8, got {plan.width}x{plan.height}")
    if plan.steps < 1:
        raise GenerationFailed(f"steps must be at least 1, got {plan.steps}")
    if not plan.seeds:
        raise GenerationFailed("the plan has no seeds: nothing to generate")


def _scheduler(plan: GenerationPlan, pipe: StableDiffusionXLPipeline) -> SchedulerMixin:
    # The cached pipeline's scheduler is never replaced, so its config stays the checkpoint's own.
    try:
        return make_scheduler(plan.sampler_name, plan.scheduler_name, pipe.scheduler.config)
    except ValueError as exc:
        raise GenerationFailed(f"sampler {plan.sampler_name!r} with scheduler {plan.scheduler_name!r}: {exc}") from exc


def _guidance(plan: GenerationPlan) -> GuidanceSettings:
    return GuidanceSettings(
        guidance_scale=plan.guidance_scale,
        adaptive_cfg=plan.adaptive_cfg,
        sharpness=plan.sharpness,
        adm_scaler_positive=plan.adm_scaler_positive,
        adm_scaler_negative=plan.adm_scaler_negative,
        adm_scaler_end=plan.adm_scaler_end,
    )


def _with_scheduler(
    pipe: StableDiffusionXLPipeline, scheduler: SchedulerMixin, guidance: GuidanceSettings
) -> StableDiffusionXLPipeline:
    """A pipeline sharing `pipe`'s models but with its own scheduler and guided UNet.

    The cached pipeline stays untouched (the GuidedUNet holds per-task settings). Built directly
    rather than with `from_pipe`, which also re-casts every model and logs about it.
    """
    try:  # the bare UNet when every extra is off; ValueError for schedulers it cannot follow (EDM)
        unet = wrap_unet(pipe.unet, guidance, scheduler, pipe.vae_scale_factor)
    except ValueError as exc:
        raise GenerationFailed(str(exc)) from exc
    task_pipe = StableDiffusionXLPipeline(
        **{**pipe.components, "scheduler": scheduler, "unet": unet},
        force_zeros_for_empty_prompt=pipe.config.force_zeros_for_empty_prompt,
        add_watermarker=False,
    )
    task_pipe.set_progress_bar_config(disable=True)
    return task_pipe


def _denoise(
    pipe: StableDiffusionXLPipeline, plan: GenerationPlan, index: int, seed: int, hooks: GenerationHooks
) -> torch.Tensor:
    """Latents of one finished image; raises _Aborted when the caller skips or stops it."""
    # A CPU generator even on CUDA: the seed gives the same initial noise on every device and GPU model.
    generator = torch.Generator(device="cpu").manual_seed(seed)
    prepare_for_image(pipe.scheduler, seed)
    output = pipe(
        prompt=plan.prompt_for(index),
        # Fooocus encodes an empty negative prompt like any other; None would zero it (diffusers' SDXL default).
        negative_prompt=plan.negative_prompt_for(index),
        width=plan.width,
        height=plan.height,
        num_inference_steps=plan.steps,
        guidance_scale=plan.guidance_scale,
        generator=generator,
        eta=step_eta(pipe.scheduler),
        output_type="latent",
        callback_on_step_end=_StepCallback(hooks, index, plan.steps, preview=not plan.disable_preview),
        callback_on_step_end_tensor_inputs=["latents"],
    )
    return output.images


class _StepCallback:
    """diffusers' `callback_on_step_end`: reports completed steps, then asks whether to go on.

    Second-order schedulers (Heun, DPM2, DPM++ SDE) call back twice per step; like diffusers'
    own progress bar, a step counts as done every `scheduler.order` calls and at the last one.
    """

    def __init__(self, hooks: GenerationHooks, image_index: int, steps: int, preview: bool) -> None:
        self.hooks = hooks
        self.image_index = image_index
        self.steps = steps
        self.preview = preview
        self.done = 0

    def __call__(
        self, pipe: StableDiffusionXLPipeline, i: int, t: Any, tensors: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        if not (i == pipe.num_timesteps - 1 or (i + 1) % pipe.scheduler.order == 0):
            return tensors
        self.done += 1
        jpeg = latent_preview_jpeg(tensors["latents"]) if self.preview else None
        self.hooks.on_step(self.image_index, self.done, self.steps, jpeg)
        action = self.hooks.poll_control()
        if action is not None:
            raise _Aborted(action)
        return tensors


def _decode(pipe: StableDiffusionXLPipeline, latents: torch.Tensor) -> Image.Image:
    """Latents -> RGB image, as the SDXL pipeline decodes (float32 VAE when it would overflow)."""
    if not torch.isfinite(latents).all():
        # Decoding would give a black image; say what happened instead (fp16 overflow, broken sampler).
        raise GenerationFailed("denoising produced non-finite latents (NaN/inf); try another sampler or float32")
    vae = pipe.vae
    if vae.dtype == torch.float16 and vae.config.force_upcast:
        vae.float()  # left in float32: the store keeps it that way anyway (see ModelStore._load)
    latents = latents.to(device=vae.device, dtype=vae.dtype)
    mean, std = vae.config.get("latents_mean"), vae.config.get("latents_std")
    if mean is not None and std is not None:  # Playground-style VAEs normalise their latents
        mean_t = torch.tensor(mean, device=latents.device, dtype=latents.dtype).view(1, -1, 1, 1)
        std_t = torch.tensor(std, device=latents.device, dtype=latents.dtype).view(1, -1, 1, 1)
        latents = latents * std_t / vae.config.scaling_factor + mean_t
    else:
        latents = latents / vae.config.scaling_factor
    decoded = vae.decode(latents, return_dict=False)[0]
    return pipe.image_processor.postprocess(decoded, output_type="pil")[0].convert("RGB")
