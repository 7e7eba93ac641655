"""Upscale/vary and inpaint/outpaint: Fooocus's image tabs on diffusers' SDXL img2img pipeline.

The size, mask and crop rules are pure functions in `engine/imaging/`; this module runs them and
the diffusion passes:

- vary: the input resized so its shape ceil is 1024..2048, img2img at 0.5 / 0.85. With `--max-batch`
  above 1 the engine runs vary through batching.py instead (`vary_start`), as rows beside others.
- upscale: the super-resolution model (tiled), resized to the factor, then (unless Fast or over
  2800 px) a tiled img2img pass at 0.382, so memory stays bounded at any size. With `--max-batch`
  above 1 the tiles (all of one size) denoise as rows of one batch, `max_batch` at a time.
- inpaint/outpaint: Fooocus's crop around the mask at ~1024, the masked area pre-filled when the
  strength is above 0.99, unmasked latents put back after every step, then the crop pasted back
  with a feathered mask so that pixels away from the mask keep their exact input values. With
  `--max-batch` above 1 the task's images denoise as rows of one batch (`inpaint_rows`); with
  Fooocus's inpaint patch only when they all fit in one, as they must drop the patch together.

Denoise follows Fooocus (ComfyUI): `steps` steps are run at the end of a schedule of
`steps / denoise` steps, where diffusers' img2img would run only `steps * strength` of them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, assert_never

import numpy as np
import torch
from diffusers import StableDiffusionXLImg2ImgPipeline
from PIL import Image

from fooocus_es.engine.demo.inpaint_patch import write_demo_inpaint_files
from fooocus_es.engine.demo.upscaler import ensure_demo_upscaler
from fooocus_es.engine.diffusion.batching import (
    AfterStep,
    BatchDenoiser,
    DenoiseRequest,
    ImageStart,
    StepResult,
    batch_key,
    run_one_plan,
)
from fooocus_es.engine.diffusion.inpaint_patch import (
    AppliedPatch,
    InpaintFilesMissing,
    InpaintPatch,
    InpaintPatchUnsupported,
    fooocus_latent_mask,
    head_input,
    load_inpaint_patch,
    neutral_masked_pixels,
    unwrap_unet,
)
from fooocus_es.engine.diffusion.preview import latent_preview_jpeg
from fooocus_es.engine.diffusion.sampling import (
    Aborted,
    ConditioningCache,
    GeneratedImage,
    GenerationFailed,
    GenerationHooks,
    Status,
    StepCallback,
    decode_latents,
    decode_latents_batch,
    preview_wanted,
    scale_latents,
)
from fooocus_es.engine.diffusion.schedulers import fooocus_schedule, prepare_for_image, step_eta
from fooocus_es.engine.imaging.inpaint_area import InpaintJob, paste_back, prepare_inpaint
from fooocus_es.engine.imaging.inputs import inpaint_image_and_mask, load_rgb
from fooocus_es.engine.imaging.masks import mask_is_empty
from fooocus_es.engine.imaging.resample import resample_image
from fooocus_es.engine.imaging.sizes import crop_to_multiple, plan_upscale, vae_crop_size, vary_size
from fooocus_es.engine.imaging.tiling import Box, tile_boxes, tiled_map
from fooocus_es.engine.models.files import DEFAULT_UPSCALER, UPSCALE_DIR
from fooocus_es.engine.models.upscalers import UpscalerModel, load_upscaler, upscale
from fooocus_es.engine.planning.demo_names import DEMO_CHECKPOINT
from fooocus_es.engine.planning.plan import INPAINT_DIR
from fooocus_es.engine.planning.plan_types import GenerationPlan, ImageTask, InpaintTask, UpscaleTask, VaryTask

DIFFUSION_TILE = 1024  # SDXL's native size: the tiled upscale pass diffuses 1024-px tiles
DIFFUSION_OVERLAP = 128
SYNTHETIC_REFINER_SWITCH = 0.8  # Fooocus drops the inpaint patch for the last 20% of the steps
_BLEND_NOISE_SEED = 0x5EED  # the re-noising of kept latents must not replay the sampler's noise

PipeFactory = Callable[[type[Any]], Any]


def vary_input_size(data_dir: Path, task: VaryTask) -> tuple[int, int] | None:
    """(width, height) vary diffuses `task`'s input at, from its header alone; None when unreadable
    (the vary itself then fails with the reason)."""
    try:
        with Image.open(data_dir / task.image) as opened:
            width, height = opened.size
    except (OSError, ValueError):
        return None
    return vae_crop_size(*vary_size(width, height), 8)


def vary_source(data_dir: Path, task: VaryTask) -> np.ndarray:
    """Vary's input as it is diffused: resized into SDXL's range, cropped to multiples of 8."""
    image = load_rgb(data_dir / task.image)
    width, height = vary_size(image.shape[1], image.shape[0])
    return crop_to_multiple(resample_image(image, width, height), 8)


def encode_latents(vae: Any, pixels: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) in [-1, 1] -> diffusion latents (the VAE's mean: no sampling noise in the kept area)."""
    encoded = vae.encode(pixels.to(device=vae.device, dtype=vae.dtype)).latent_dist.mean
    return scale_latents(encoded, vae).to(torch.float32)


class ImageToImage:
    """Runs plans with an image task. Owned by the Engine; one thread; caches the SR model it loaded."""

    def __init__(
        self, models_dir: Path, data_dir: Path, device: str, dtype: torch.dtype, *, construction: threading.RLock,
        max_batch: int = 1,
    ) -> None:
        """`construction`: the process's model-load lock (ModelStore.construction), held while the SR
        model and the inpaint patch are built (and their demo files written). `max_batch`: upscale
        tiles denoised together (1: one after another, one pipeline call each)."""
        self.construction = construction
        self.max_batch = max_batch
        self.models_dir = models_dir
        self.data_dir = data_dir
        self.device = device
        self.dtype = dtype
        self._upscaler: UpscalerModel | None = None
        self._patch: tuple[str, Path, int, InpaintPatch] | None = None  # version, folder, id(unet), patch

    def upscaler_path(self, base_model: str) -> Path:
        """The SR model: Fooocus's file, or the demo model's own tiny one (generated on first use)."""
        folder = self.models_dir / UPSCALE_DIR
        if base_model == DEMO_CHECKPOINT:
            folder.mkdir(parents=True, exist_ok=True)
            return ensure_demo_upscaler(folder)
        return folder / DEFAULT_UPSCALER

    def load_upscaler(self, base_model: str) -> UpscalerModel:
        with self.construction:
            path = self.upscaler_path(base_model)
            if self._upscaler is None or self._upscaler.name != path.name:
                self._upscaler = None  # drop the old one before loading the next
                self._upscaler = load_upscaler(path, self.device, self.dtype)
            return self._upscaler

    def inpaint_patch(self, version: str, base_model: str, unet: Any) -> InpaintPatch:
        """Fooocus's inpaint head + patch for `version`, one resident at a time (~1.3 GB for SDXL).

        The demo model gets its own tiny files, in a folder of their own so that they can never
        stand in for the real ones.
        """
        folder = self.models_dir / INPAINT_DIR
        with self.construction:
            if base_model == DEMO_CHECKPOINT:
                folder = folder / "demo"
                write_demo_inpaint_files(folder, version)
            real = unwrap_unet(unet)
            cached = self._patch
            if cached is None or cached[:3] != (version, folder, id(real)):
                self._patch = None  # free the old one before loading the next
                try:
                    self._patch = (version, folder, id(real), load_inpaint_patch(folder, version, unet))
                except (InpaintFilesMissing, InpaintPatchUnsupported) as exc:
                    raise GenerationFailed(f"inpaint_engine {version}: {exc}") from exc
            return self._patch[3]

    def vary_start(self, plan: GenerationPlan, vae: Any) -> ImageStart:
        """A vary plan's batched start: its prepared input's latents, as `_Run._vary` encodes them."""
        task = plan.image_task
        assert isinstance(task, VaryTask)
        return ImageStart(encode_latents(vae, _unit_tensor(vary_source(self.data_dir, task))), task.denoise)

    def generate(
        self,
        plan: GenerationPlan,
        make_pipe: PipeFactory,
        vae: Any,
        conditioning: ConditioningCache,
        hooks: GenerationHooks,
        base: Any = None,
    ) -> tuple[list[GeneratedImage], Status]:
        """`base`: the cached base pipeline (its bare UNet), for upscale tiles as rows of a batch."""
        task = plan.image_task
        assert task is not None
        pipe = make_pipe(StableDiffusionXLImg2ImgPipeline)
        run = _Run(self, plan, task, pipe, vae, conditioning, hooks, base)
        if isinstance(task, InpaintTask) and run.inpaint_batches(task):
            return run.inpaint_rows(task)
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
        base: Any = None,
    ) -> None:
        self.owner = owner
        self.base = base
        self.plan = plan
        self.task = task
        self.pipe = pipe
        self.vae = vae
        self.conditioning = conditioning
        self.hooks = hooks
        self._source: np.ndarray | None = None  # the prepared input, the same for every seed
        self._job: InpaintJob | None = None
        self._latents: dict[str, torch.Tensor] = {}  # VAE encodings of the prepared input, shared by every seed

    def image(self, index: int, seed: int) -> tuple[Image.Image, bool]:
        match self.task:
            case VaryTask() as task:
                return self._vary(task, index, seed), False
            case UpscaleTask() as task:
                return self._upscale(task, index, seed)
            case InpaintTask() as task:
                return self._inpaint(task, index, seed)
            case unreachable:
                assert_never(unreachable)

    # -- vary ------------------------------------------------------------------------------------
    def _vary(self, task: VaryTask, index: int, seed: int) -> Image.Image:
        if self._source is None:
            self._source = vary_source(self.owner.data_dir, task)
        source = self._source
        latents = self._denoise(index, seed, self._encoded("source", lambda: _unit_tensor(source)), task.denoise)
        return decode_latents(self.pipe, self.vae, latents)

    # -- upscale ---------------------------------------------------------------------------------
    def _upscale(self, task: UpscaleTask, index: int, seed: int) -> tuple[Image.Image, bool]:
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
        boxes = tile_boxes(width, height, DIFFUSION_TILE, DIFFUSION_OVERLAP)
        tiles = len(boxes)
        counter = iter(range(tiles))
        if self._tiles_batch(boxes):
            diffused = iter(self._diffuse_tiles_batched(source, boxes, index, task.denoise))
            result = tiled_map(
                source, lambda _tile: next(diffused), tile=DIFFUSION_TILE, overlap=DIFFUSION_OVERLAP, multiple=8,
                out_dtype=np.uint8,
            )  # fmt: skip
            return Image.fromarray(result), False

        def diffuse_tile(tile: np.ndarray) -> np.ndarray:
            number = next(counter)
            offset = number * self.plan.steps
            initial = self._encode(_unit_tensor(tile))
            latents = self._denoise(index, seed, initial, task.denoise, offset=offset, total=tiles * self.plan.steps)
            return np.asarray(decode_latents(self.pipe, self.vae, latents))

        result = tiled_map(
            source, diffuse_tile, tile=DIFFUSION_TILE, overlap=DIFFUSION_OVERLAP, multiple=8, out_dtype=np.uint8
        )
        return Image.fromarray(result), False

    def _tiles_batch(self, boxes: list[Box]) -> bool:
        """Tiles as rows: a batch allowed, more than one tile, and a plan batching allows (the tiles
        share one size; image prompts, a refiner and second-order samplers keep the pipeline path)."""
        if self.base is None or self.owner.max_batch < 2 or len(boxes) < 2:
            return False
        return batch_key(self.plan, (boxes[0].width, boxes[0].height)) is not None

    def _diffuse_tiles_batched(
        self, source: np.ndarray, boxes: list[Box], index: int, denoise: float
    ) -> list[np.ndarray]:
        """Every tile's img2img pass, `max_batch` tiles per UNet call, each as alone (its seed's noise).

        One progress event per batched step (the tiles' steps done so far, of tiles x steps), then
        the tiles decode `max_batch` per VAE call, in tile order for `tiled_map`.
        """
        plan, limit = self.plan, self.owner.max_batch
        denoiser = BatchDenoiser(self.base)
        waiting = [
            DenoiseRequest.of(
                plan, index, self.conditioning,
                ImageStart(self._encode(_unit_tensor(source[b.y : b.bottom, b.x : b.right])), denoise),
            )
            for b in boxes
        ]  # fmt: skip
        tile_of: dict[int, int] = {}
        latents: dict[int, torch.Tensor] = {}
        total, done = len(boxes) * plan.steps, 0
        preview = not (plan.disable_preview or plan.black_out_nsfw)
        while waiting or len(denoiser):
            while waiting and len(denoiser) < limit:
                tile_of[denoiser.add(waiting.pop(0))] = len(tile_of)
            results = denoiser.step()
            done += len(results)
            wanted = preview and preview_wanted(self.hooks, index)
            self.hooks.on_step(index, done, total, latent_preview_jpeg(results[0].latents) if wanted else None)
            action = self.hooks.poll_control()
            if action is not None:
                raise Aborted(action)
            for finished in denoiser.finished():
                latents[tile_of[finished.request_id]] = finished.latents
        ordered = [latents[tile] for tile in range(len(boxes))]
        images: list[Image.Image] = []
        for first in range(0, len(ordered), limit):
            images += decode_latents_batch(self.pipe, self.vae, torch.cat(ordered[first : first + limit]))
        return [np.asarray(image) for image in images]

    # -- inpaint / outpaint ----------------------------------------------------------------------
    def _inpaint(self, task: InpaintTask, index: int, seed: int) -> tuple[Image.Image, bool]:
        if task.debug_mask:
            _image, mask = inpaint_image_and_mask(task, self.owner.data_dir)
            return Image.fromarray(mask).convert("RGB"), True
        job = self._inpaint_job(task)
        inputs = self._inpaint_inputs(task, job)
        blend = _KeepUnmasked(inputs.original, inputs.latent_mask, seed)
        if task.inpaint_engine == "None":
            latents = self._denoise(index, seed, inputs.initial, task.denoise, blend=blend)
        else:
            latents = self._denoise_patched(task, index, seed, blend, job, inputs)
        generated = np.asarray(decode_latents(self.pipe, self.vae, latents))
        return Image.fromarray(paste_back(job, generated)), False

    def inpaint_batches(self, task: InpaintTask) -> bool:
        """The task's images as rows of one batch: a batch allowed, more than one image, a plan
        batching allows, and with the inpaint patch no more images than one batch holds (they run in
        lockstep, so that the patch comes off for all of them at its switch step)."""
        plan, limit = self.plan, self.owner.max_batch
        if self.base is None or limit < 2 or len(plan.seeds) < 2 or task.debug_mask:
            return False
        if task.inpaint_engine != "None" and len(plan.seeds) > limit:
            return False
        crop = self._inpaint_job(task).crop_image
        return batch_key(plan, (crop.shape[1], crop.shape[0])) is not None

    def inpaint_rows(self, task: InpaintTask) -> tuple[list[GeneratedImage], Status]:
        """Every image of the task from its one crop, `max_batch` rows per UNet call, each with its
        own seed's noise and mask blend (as `_inpaint` alone); decoded together, then pasted back."""
        job = self._inpaint_job(task)
        inputs = self._inpaint_inputs(task, job)
        start = ImageStart(
            inputs.initial, task.denoise,
            keep=lambda seed: _KeepUnmasked(inputs.original, inputs.latent_mask, seed).blend,
        )  # fmt: skip
        assert self.base is not None  # inpaint_batches said so
        denoiser = BatchDenoiser(self.base)
        with self._patch_off_at_switch(task, job, inputs) as after_step:
            images, status = run_one_plan(
                self.plan, denoiser, self.conditioning, self.hooks, self.owner.max_batch,
                decode=lambda latents: decode_latents_batch(self.pipe, self.vae, latents),
                start=start, after_step=after_step,
            )  # fmt: skip
        pasted = [Image.fromarray(paste_back(job, np.asarray(image.image))) for image in images]
        return [GeneratedImage(i.image_index, i.seed, image) for i, image in zip(images, pasted, strict=True)], status

    def _inpaint_job(self, task: InpaintTask) -> InpaintJob:
        """Fooocus's crop around the mask, prepared once for every seed."""
        if self._job is None:
            image, mask = inpaint_image_and_mask(task, self.owner.data_dir)
            if mask_is_empty(mask):
                raise GenerationFailed("inpaint_mask_image_upload: the mask selects nothing to inpaint")
            model = self._sr_model()
            upscaler = (lambda crop: np.asarray(upscale(model, Image.fromarray(crop)))) if model else None
            scale = model.scale if model is not None else 4
            self._job = prepare_inpaint(
                image, mask, task.respective_field, task.denoise, upscaler=upscaler, sr_scale=scale
            )
        return self._job

    def _inpaint_inputs(self, task: InpaintTask, job: InpaintJob) -> _InpaintInputs:
        original = self._encoded("original", lambda: _unit_tensor(job.crop_image))
        if task.disable_initial_latent:
            initial = torch.zeros_like(original)
        else:
            initial = self._encoded("fill", lambda: _unit_tensor(job.crop_fill))
        pixel_mask = torch.from_numpy((job.crop_mask > 127).astype(np.float32))
        latent_mask = fooocus_latent_mask(pixel_mask, tuple(original.shape[-2:])).to(original.device)
        return _InpaintInputs(original, initial, pixel_mask, latent_mask)

    @contextlib.contextmanager
    def _patch_applied(self, task: InpaintTask, job: InpaintJob, inputs: _InpaintInputs) -> Iterator[AppliedPatch]:
        """Fooocus's inpaint engine on the UNet: its weight patch, and its head fed the original
        crop with the masked pixels greyed out. Off again on exit, or at `restore()`."""
        patch = self.owner.inpaint_patch(task.inpaint_engine, self.plan.base_model, self.pipe.unet)
        crop, pixel_mask = job.crop_image, inputs.pixel_mask
        masked = self._encoded("masked", lambda: neutral_masked_pixels(_unit_tensor(crop), pixel_mask))
        with patch.applied(self.pipe.unet, head_input(inputs.latent_mask, masked)) as applied:
            yield applied

    @property
    def _switch_step(self) -> int:
        """Fooocus's "synthetic refiner": the unpatched base UNet takes over after this many steps."""
        return int(round(self.plan.steps * SYNTHETIC_REFINER_SWITCH))

    @contextlib.contextmanager
    def _patch_off_at_switch(
        self, task: InpaintTask, job: InpaintJob, inputs: _InpaintInputs
    ) -> Iterator[AfterStep | None]:
        """For batched rows in lockstep: the patch applied, and the after-step hook that takes it
        off at the switch step (None, and no patch, for inpaint_engine "None")."""
        if task.inpaint_engine == "None":
            yield None
            return
        switch = self._switch_step
        with self._patch_applied(task, job, inputs) as applied:

            def after_step(results: list[StepResult]) -> None:
                if results and results[0].step == switch:
                    applied.restore()  # rows in lockstep: every one has just done its switch step

            yield after_step

    def _denoise_patched(
        self, task: InpaintTask, index: int, seed: int, blend: _KeepUnmasked, job: InpaintJob, inputs: _InpaintInputs
    ) -> torch.Tensor:
        """Fooocus's inpaint engine: the patched UNet + head for the first 80% of the steps, then the plain one."""
        switch = self._switch_step
        with self._patch_applied(task, job, inputs) as applied:

            def blend_then_switch(pipe: Any, i: int, tensors: dict[str, torch.Tensor]) -> None:
                blend(pipe, i, tensors)
                order = pipe.scheduler.order
                if (i + 1) % order == 0 and (i + 1) // order == switch:
                    applied.restore()  # steps from here on run on the unpatched UNet

            return self._denoise(index, seed, inputs.initial, task.denoise, blend=blend_then_switch)

    def _sr_model(self) -> UpscalerModel | None:
        """Fooocus super-resolves small crops before diffusing them; without an SR model, plain resampling."""
        if not self.owner.upscaler_path(self.plan.base_model).is_file():
            return None
        return self.owner.load_upscaler(self.plan.base_model)

    def _encoded(self, key: str, pixels: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The latents of one of the task's inputs, encoded once for all its seeds."""
        if key not in self._latents:
            self._latents[key] = self._encode(pixels())
        return self._latents[key]

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return encode_latents(self.vae, pixels)

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
        # Latents, not pixels: diffusers' own encode would re-cast the shared VAE around every call.
        initial = latents.to(device=pipe.unet.device, dtype=pipe.unet.dtype)
        output = pipe(
            **self.conditioning.pipeline_kwargs(plan, index),
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


def _unit_tensor(pixels: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> (1, 3, H, W) float32 in [-1, 1], the VAE's input range."""
    tensor = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None].to(torch.float32)
    return tensor / 127.5 - 1.0


@dataclass(frozen=True)
class _InpaintInputs:
    """One inpaint task's latents, encoded once for all its seeds, and its masks."""

    original: torch.Tensor  # the crop's latents
    initial: torch.Tensor  # where denoising starts: the pre-filled crop's, or zeros
    pixel_mask: torch.Tensor  # (H, W), 1 where the crop is inpainted
    latent_mask: torch.Tensor  # Fooocus's mask at the latent size


class _KeepUnmasked:
    """After every scheduler call: unmasked latents <- the original's, noised to the next timestep.

    diffusers' own SDXL inpaint pipeline does the same for 4-channel UNets; the final call puts
    back the clean original, so the decoded crop only differs where the mask is. Called as the
    pipeline's step callback (alone), or `blend` as a batched row's `RowBlend`.
    """

    def __init__(self, original: torch.Tensor, mask: torch.Tensor, seed: int) -> None:
        self.original = original
        self.mask = mask
        generator = torch.Generator(device="cpu").manual_seed(seed ^ _BLEND_NOISE_SEED)
        self.noise = torch.randn(original.shape, generator=generator, dtype=torch.float32).to(original.device)

    def __call__(self, pipe: Any, i: int, tensors: dict[str, torch.Tensor]) -> None:
        # `i` counts the pipeline's own loop: img2img runs the schedule's tail (Fooocus's denoise
        # below 1 starts part-way), so index that tail, not the whole schedule.
        loop = pipe.scheduler.timesteps[-pipe.num_timesteps :]
        tensors["latents"] = self.blend(pipe.scheduler, loop, i, tensors["latents"])

    def blend(self, scheduler: Any, timesteps: torch.Tensor, i: int, latents: torch.Tensor) -> torch.Tensor:
        """`latents` after loop step `i` of `timesteps`, with the unmasked area put back."""
        if i < len(timesteps) - 1:
            kept = scheduler.add_noise(self.original, self.noise, timesteps[i + 1 : i + 2])
        else:
            kept = self.original
        mask = self.mask.to(latents.dtype)
        return mask * latents + (1 - mask) * kept.to(latents.dtype)
