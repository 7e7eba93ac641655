"""Upscale/vary and inpaint/outpaint: Fooocus's image tabs on diffusers' SDXL img2img pipeline.

The size, mask and crop rules are pure functions in `engine/imaging/`; this module runs them and
the diffusion passes:

- vary: the input resized so its shape ceil is 1024..2048, img2img at 0.5 / 0.85.
- upscale: the super-resolution model (tiled), resized to the factor, then (unless Fast or over
  2800 px) a tiled img2img pass at 0.382, so memory stays bounded at any size.
- inpaint/outpaint: Fooocus's crop around the mask at ~1024, the masked area pre-filled when the
  strength is above 0.99, unmasked latents put back after every step, then the crop pasted back
  with a feathered mask so that pixels away from the mask keep their exact input values.

Denoise follows Fooocus (ComfyUI): `steps` steps are run at the end of a schedule of
`steps / denoise` steps, where diffusers' img2img would run only `steps * strength` of them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionXLImg2ImgPipeline
from PIL import Image

from fooocus_es.engine.demo_model import DEMO_CHECKPOINT
from fooocus_es.engine.demo_upscaler import ensure_demo_upscaler
from fooocus_es.engine.image_inputs import inpaint_image_and_mask, load_rgb
from fooocus_es.engine.imaging.inpaint_area import InpaintJob, paste_back, prepare_inpaint
from fooocus_es.engine.imaging.masks import mask_is_empty
from fooocus_es.engine.imaging.resample import resample_image
from fooocus_es.engine.imaging.sizes import crop_to_multiple, plan_upscale, vary_size
from fooocus_es.engine.plan_types import GenerationPlan, ImageTask
from fooocus_es.engine.sampling import (
    Aborted,
    ConditioningCache,
    GeneratedImage,
    GenerationFailed,
    GenerationHooks,
    Status,
    StepCallback,
    decode_latents,
    prompt_parts,
    scale_latents,
)
from fooocus_es.engine.schedulers import prepare_for_image, step_eta
from fooocus_es.engine.tiling import tile_boxes, tiled_map
from fooocus_es.engine.upscalers import DEFAULT_UPSCALER, UPSCALE_DIR, UpscalerModel, load_upscaler, upscale

DIFFUSION_TILE = 1024  # SDXL's native size: the tiled upscale pass diffuses 1024-px tiles
DIFFUSION_OVERLAP = 128
MAX_SCHEDULE = 1000  # a schedule longer than the 1000 training timesteps is not defined
_BLEND_NOISE_SEED = 0x5EED  # the re-noising of kept latents must not replay the sampler's noise

PipeFactory = Callable[[type[Any]], Any]


def fooocus_schedule(steps: int, denoise: float) -> tuple[int, float]:
    """(num_inference_steps, strength) for diffusers so that `steps` steps run at `denoise`.

    ComfyUI builds a schedule of int(steps / denoise) steps and runs its last `steps`; diffusers
    runs int(num_inference_steps * strength) from the end, so strength is set half a step over.
    """
    if denoise >= 0.9999:
        return steps, 1.0
    if denoise <= 0:
        raise GenerationFailed(f"denoise strength must be above 0, got {denoise}")
    total = min(MAX_SCHEDULE, max(steps, int(steps / denoise)))
    run = min(steps, int(total * denoise + 0.5)) if total == MAX_SCHEDULE else steps
    return total, min(1.0, (run + 0.5) / total)


class ImageToImage:
    """Runs plans with an image task. Owned by the Engine; one thread; caches the SR model it loaded."""

    def __init__(self, models_dir: Path, data_dir: Path, device: str, dtype: torch.dtype) -> None:
        self.models_dir = models_dir
        self.data_dir = data_dir
        self.device = device
        self.dtype = dtype
        self._upscaler: UpscalerModel | None = None

    def upscaler_path(self, base_model: str) -> Path:
        """The SR model: Fooocus's file, or the demo model's own tiny one (generated on first use)."""
        folder = self.models_dir / UPSCALE_DIR
        if base_model == DEMO_CHECKPOINT:
            folder.mkdir(parents=True, exist_ok=True)
            return ensure_demo_upscaler(folder)
        return folder / DEFAULT_UPSCALER

    def load_upscaler(self, base_model: str) -> UpscalerModel:
        path = self.upscaler_path(base_model)
        if self._upscaler is None or self._upscaler.name != path.name:
            self._upscaler = None  # drop the old one before loading the next
            self._upscaler = load_upscaler(path, self.device, self.dtype)
        return self._upscaler

    def generate(
        self,
        plan: GenerationPlan,
        make_pipe: PipeFactory,
        vae: Any,
        conditioning: ConditioningCache,
        hooks: GenerationHooks,
    ) -> tuple[list[GeneratedImage], Status]:
        task = plan.image_task
        assert task is not None
        pipe = make_pipe(StableDiffusionXLImg2ImgPipeline)
        run = _Run(self, plan, task, pipe, vae, conditioning, hooks)
        images: list[GeneratedImage] = []
        for index, seed in enumerate(plan.seeds):
            try:
                image, final = run.image(index, seed)
            except Aborted as aborted:
                if aborted.action == "stop":
                    return images, "stopped"
                continue
            images.append(GeneratedImage(image_index=index, seed=seed, image=image))
            if final:  # no diffusion ran (Fast upscale, mask preview): every seed would give this image
                break
        return images, "finished"


class _Run:
    """One task's image work; `image(index, seed)` produces one output image."""

    def __init__(
        self,
        owner: ImageToImage,
        plan: GenerationPlan,
        task: ImageTask,
        pipe: Any,
        vae: Any,
        conditioning: ConditioningCache,
        hooks: GenerationHooks,
    ) -> None:
        self.owner = owner
        self.plan = plan
        self.task = task
        self.pipe = pipe
        self.vae = vae
        self.conditioning = conditioning
        self.hooks = hooks
        self._source: np.ndarray | None = None  # the prepared input, the same for every seed
        self._job: InpaintJob | None = None

    def image(self, index: int, seed: int) -> tuple[Image.Image, bool]:
        kind = self.task.kind
        if kind == "vary":
            return self._vary(index, seed), False
        if kind == "upscale":
            return self._upscale(index, seed)
        if kind == "inpaint":
            return self._inpaint(index, seed)
        raise GenerationFailed(f"unknown image task {kind!r}")

    # -- vary ------------------------------------------------------------------------------------
    def _vary(self, index: int, seed: int) -> Image.Image:
        if self._source is None:
            image = load_rgb(self.owner.data_dir / self.task.image)
            width, height = vary_size(image.shape[1], image.shape[0])
            self._source = crop_to_multiple(resample_image(image, width, height), 8)
        latents = self._denoise(index, seed, self._encode(self._source), self.task.denoise)
        return decode_latents(self.pipe, self.vae, latents)

    # -- upscale ---------------------------------------------------------------------------------
    def _upscale(self, index: int, seed: int) -> tuple[Image.Image, bool]:
        task = self.task
        if self._source is None:
            image = load_rgb(self.owner.data_dir / task.image)
            model = self.owner.load_upscaler(self.plan.base_model)
            sizes = plan_upscale(
                image.shape[1], image.shape[0], task.method, task.upscale_factor, task.denoise, sr_scale=model.scale
            )
            enlarged = np.asarray(upscale(model, Image.fromarray(image)))
            resized = resample_image(enlarged, sizes.width, sizes.height)
            if sizes.direct_return:
                return Image.fromarray(resized), True
            self._source = crop_to_multiple(resized, 8)
        source = self._source
        height, width = source.shape[:2]
        tiles = len(tile_boxes(width, height, DIFFUSION_TILE, DIFFUSION_OVERLAP))
        counter = iter(range(tiles))

        def diffuse_tile(tile: np.ndarray) -> np.ndarray:
            number = next(counter)
            offset = number * self.plan.steps
            latents = self._denoise(
                index, seed, self._encode(tile), task.denoise, offset=offset, total=tiles * self.plan.steps
            )
            return np.asarray(decode_latents(self.pipe, self.vae, latents))

        result = tiled_map(
            source, diffuse_tile, tile=DIFFUSION_TILE, overlap=DIFFUSION_OVERLAP, multiple=8, out_dtype=np.uint8
        )
        return Image.fromarray(result), False

    # -- inpaint / outpaint ----------------------------------------------------------------------
    def _inpaint(self, index: int, seed: int) -> tuple[Image.Image, bool]:
        task = self.task
        if self._job is None:
            image, mask = inpaint_image_and_mask(task, self.owner.data_dir)
            if task.debug_mask:
                return Image.fromarray(mask).convert("RGB"), True
            if mask_is_empty(mask):
                raise GenerationFailed("inpaint_mask_image_upload: the mask selects nothing to inpaint")
            model = self._sr_model()
            upscaler = (lambda crop: np.asarray(upscale(model, Image.fromarray(crop)))) if model else None
            scale = model.scale if model is not None else 4
            self._job = prepare_inpaint(
                image, mask, task.respective_field, task.denoise, upscaler=upscaler, sr_scale=scale
            )
        job = self._job
        original = self._encode(job.crop_image)
        initial = torch.zeros_like(original) if task.disable_initial_latent else self._encode(job.crop_fill)
        latent_mask = _latent_mask(job.crop_mask, original)
        blend = _KeepUnmasked(original, latent_mask, seed)
        latents = self._denoise(index, seed, initial, task.denoise, blend=blend)
        generated = np.asarray(decode_latents(self.pipe, self.vae, latents))
        return Image.fromarray(paste_back(job, generated)), False

    def _sr_model(self) -> UpscalerModel | None:
        """Fooocus super-resolves small crops before diffusing them; without an SR model, plain resampling."""
        if not self.owner.upscaler_path(self.plan.base_model).is_file():
            return None
        return self.owner.load_upscaler(self.plan.base_model)

    def _encode(self, pixels: np.ndarray) -> torch.Tensor:
        """HxWx3 uint8 -> diffusion latents (the VAE's mean: no sampling noise in the kept area)."""
        vae = self.vae
        tensor = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None].to(torch.float32)
        tensor = (tensor / 127.5 - 1.0).to(device=vae.device, dtype=vae.dtype)
        encoded = vae.encode(tensor).latent_dist.mean
        return scale_latents(encoded, vae).to(torch.float32)

    # -- one diffusion pass ----------------------------------------------------------------------
    def _denoise(
        self,
        index: int,
        seed: int,
        latents: torch.Tensor,
        denoise: float,
        *,
        blend: Callable[[Any, int, dict[str, torch.Tensor]], None] | None = None,
        offset: int = 0,
        total: int | None = None,
    ) -> torch.Tensor:
        plan, pipe = self.plan, self.pipe
        generator = torch.Generator(device="cpu").manual_seed(seed)
        prepare_for_image(pipe.scheduler, seed)
        schedule, strength = fooocus_schedule(plan.steps, denoise)
        cond = self.conditioning.get(*prompt_parts(plan, index))
        # Latents, not pixels: diffusers' own encode would re-cast the shared VAE around every call.
        initial = latents.to(device=pipe.unet.device, dtype=pipe.unet.dtype)
        output = pipe(
            prompt_embeds=cond.prompt_embeds,
            pooled_prompt_embeds=cond.pooled_prompt_embeds,
            negative_prompt_embeds=cond.negative_prompt_embeds,
            negative_pooled_prompt_embeds=cond.negative_pooled_prompt_embeds,
            image=initial,
            strength=strength,
            num_inference_steps=schedule,
            guidance_scale=plan.guidance_scale,
            generator=generator,
            eta=step_eta(pipe.scheduler),
            output_type="latent",
            callback_on_step_end=StepCallback(
                self.hooks,
                index,
                plan.steps,
                preview=not (plan.disable_preview or plan.black_out_nsfw),
                blend=blend,
                offset=offset,
                total=total,
            ),
            callback_on_step_end_tensor_inputs=["latents"],
        )
        return output.images


def _latent_mask(mask: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """1 where a latent cell touches the mask (max-pooled over each 8x8 cell), as Fooocus's latent mask."""
    pixels = torch.from_numpy((mask > 127).astype(np.float32))[None, None]
    pooled = torch.nn.functional.max_pool2d(pixels, kernel_size=8, stride=8, ceil_mode=True)
    pooled = torch.nn.functional.interpolate(pooled, size=like.shape[-2:], mode="nearest")
    return pooled.to(device=like.device, dtype=like.dtype)


class _KeepUnmasked:
    """After every scheduler call: unmasked latents <- the original's, noised to the next timestep.

    diffusers' own SDXL inpaint pipeline does the same for 4-channel UNets; the final call puts
    back the clean original, so the decoded crop only differs where the mask is.
    """

    def __init__(self, original: torch.Tensor, mask: torch.Tensor, seed: int) -> None:
        self.original = original
        self.mask = mask
        generator = torch.Generator(device="cpu").manual_seed(seed ^ _BLEND_NOISE_SEED)
        self.noise = torch.randn(original.shape, generator=generator, dtype=torch.float32).to(original.device)

    def __call__(self, pipe: Any, i: int, tensors: dict[str, torch.Tensor]) -> None:
        latents = tensors["latents"]
        timesteps = pipe.scheduler.timesteps
        if i < len(timesteps) - 1:
            kept = pipe.scheduler.add_noise(self.original, self.noise, timesteps[i + 1 : i + 2])
        else:
            kept = self.original
        mask = self.mask.to(latents.dtype)
        tensors["latents"] = mask * latents + (1 - mask) * kept.to(latents.dtype)
