"""Step-level batched denoising (continuous batching, in vLLM's shape): text to image, vary, inpaint.

A *request* is one image of one plan: its seed's initial noise, its own scheduler instance, its
prompt embeddings and its guidance settings. `BatchDenoiser.step()` runs ONE UNet call over the
rows of every active request (each request's `[uncond; cond]` rows, or `[cond]` without CFG, next
to the others'), with a timestep per row, so requests at different points of their schedules share
the call. Then each request gets its own CFG combine (Fooocus's sharpness, adaptive CFG and ADM
through `RowGuidance`, with that request's own progress) and its own `scheduler.step`. Requests join
between steps (`add`) and leave when their steps are done (`finished`) or dropped (`drop`).

Pixels depend only on the request: its noise is drawn exactly as the single-image pipeline call
draws it (a CPU generator seeded with the image's seed, then the scheduler's init sigma), and its
rows see the same inputs as there. What can differ is the UNet's arithmetic at another batch size
(kernels block their sums differently), measured in tests/engine/test_batching.py.

A vary image is a request that starts from its input's latents (`ImageStart`): noised to the first
timestep of Fooocus's shortened schedule, as diffusers' img2img pipeline does, and from there a row
like any other, so vary rows share UNet calls with text-to-image rows of the same latent size.
Requests that finish at the same step are decoded in one VAE call (`BatchRun`).

The tiles of one upscale image are rows of one batch too (image_to_image.py), all of a size, and
so are the images of one inpaint or outpaint task: one crop, each row with its own seed and its own
mask blend after every step (`ImageStart.keep`). Neither shares its calls with other tasks: an upscale
task's tile size is known only after super-resolution, and Fooocus's inpaint patch changes the
shared UNet for its task (its rows then run in lockstep, so that the patch comes off for all of
them at the same step). Not batched at all (`batch_key` is None, the single-image path runs them):
image prompts, a refiner, and second-order samplers (two UNet calls per step).
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import torch
from diffusers import StableDiffusionXLPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from fooocus_es.engine.diffusion.guided_unet import GuidanceSettings, RowGuidance, row_guidance
from fooocus_es.engine.diffusion.preview import latent_preview_jpeg
from fooocus_es.engine.diffusion.sampling import (
    ConditioningCache,
    GeneratedImage,
    GenerationHooks,
    Status,
    check_finite,
    guidance_settings,
    preview_wanted,
)
from fooocus_es.engine.diffusion.schedulers import (
    fooocus_schedule,
    make_scheduler,
    prepare_for_image,
    sampler_order,
    step_eta,
    unsupported_reason,
)
from fooocus_es.engine.diffusion.text_encoding import Conditioning
from fooocus_es.engine.planning.plan_types import BatchKey, GenerationPlan, InpaintTask, UpscaleTask, VaryTask

Tensor = torch.Tensor


# Device memory (GiB) -> images per UNet call. A heuristic, not yet measured on a GPU: an SDXL
# base in fp16 takes ~7 GiB and each 1024x1024 image with CFG ~1.5 GiB more during a step at batch
# sizes where the UNet stops being launch-bound (perf-anchors.md: 16 image-steps at 37 ms each).
_BATCH_BY_MEMORY = ((70, 8), (40, 4), (20, 2))


def auto_max_batch(device: str, total_bytes: int | None = None) -> int:
    """`--max-batch` left at its default: 1 on a CPU (or an unknown device), by memory on CUDA."""
    if not device.startswith("cuda"):
        return 1
    if total_bytes is None:
        if not torch.cuda.is_available():
            return 1
        total_bytes = torch.cuda.get_device_properties(torch.device(device)).total_memory
    gib = total_bytes / 2**30
    return next((images for floor, images in _BATCH_BY_MEMORY if gib >= floor), 1)


def batch_key(plan: GenerationPlan, start_size: tuple[int, int] | None = None) -> BatchKey | None:
    """Which plans' images may share UNet calls: equal keys batch, None never batches.

    `start_size` (width, height): a vary plan's input size as vary prepares it (`vary_input_size`),
    an upscale tile's, or an inpaint crop's, which is its latent size; such a plan without it does
    not batch. A vary or upscale key is that of a text to image plan of that size: from the first
    step on, the rows are the same kind. (The engine reads that size for vary only, so upscale tiles
    batch within their own task.) An inpaint key names its task, so only the task's own images match.

    Shared by the whole call, so in the key (`GenerationPlan.batch_key`): the models and their
    per-task state (base model, VAE, LoRA set and weights, FreeU are set on the shared UNet) and the
    latent size (rows are stacked into one tensor). Per row, so free to differ: prompts, seeds,
    steps, sampler and scheduler (each request owns a scheduler instance), guidance scale,
    sharpness, adaptive CFG and ADM scalers (combined per request, each at its own progress).

    None (the single-image path) for image tasks without a start size, image prompts (their tokens and ControlNet
    residuals are applied per pipeline call, by GuidedUNet), a refiner (it swaps the UNet mid-schedule),
    second-order samplers (two UNet calls per step, with the scheduler's state between them) and
    sampler/scheduler pairs the single path rejects (so its error message stays the same).
    """
    if plan.refiner_model is not None or plan.image_prompts:
        return None
    from_image = isinstance(plan.image_task, (VaryTask, UpscaleTask, InpaintTask)) and start_size is not None
    if plan.image_task is not None and not from_image:
        return None
    if unsupported_reason(plan.sampler_name, plan.scheduler_name) is not None:
        return None
    if sampler_order(plan.sampler_name) > 1:
        return None
    key = plan.batch_key()
    if from_image and start_size is not None:
        width, height = start_size
        # the inpaint patch is set on the shared UNet per task, and its mask blend is the task's
        kind = f"InpaintTask:{plan.task_id}" if isinstance(plan.image_task, InpaintTask) else type(None).__name__
        return msgspec.structs.replace(key, width=width, height=height, image_task=kind)
    return key


# After a request's scheduler step: (its scheduler, its loop's timesteps, the step's 0-based index,
# the latents) -> the latents to go on from. Inpaint puts the unmasked latents back here.
RowBlend = Callable[[SchedulerMixin, Tensor, int, Tensor], Tensor]


@dataclass(frozen=True)
class ImageStart:
    """Where a vary or inpaint image (or an upscale tile) starts: its input's latents and Fooocus's
    denoise; for inpaint, also how each seed's rows keep the unmasked latents (`keep(seed)`)."""

    latents: Tensor  # (1, C, h, w), the VAE encoding of the prepared input (shared by the plan's images)
    denoise: float
    keep: Callable[[int], RowBlend] | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels, for `batch_key`."""
        return self.latents.shape[-1] * 8, self.latents.shape[-2] * 8


@dataclass(frozen=True)
class DenoiseRequest:
    """One image of one plan, with its prompt encodings (ConditioningCache gives them)."""

    plan: GenerationPlan
    image_index: int
    conditioning: Conditioning
    start: ImageStart | None = None  # vary: from this image's latents; None: from noise

    @property
    def seed(self) -> int:
        return self.plan.seeds[self.image_index]

    @property
    def key(self) -> BatchKey | None:
        return batch_key(self.plan, self.start.size if self.start is not None else None)

    @classmethod
    def of(
        cls, plan: GenerationPlan, image_index: int, conditioning: ConditioningCache, start: ImageStart | None = None
    ) -> DenoiseRequest:
        return cls(plan, image_index, conditioning.for_image(plan, image_index), start)


@dataclass(frozen=True)
class StepResult:
    """One request's completed step: what progress hooks and previews need."""

    request_id: int
    image_index: int
    step: int  # 1-based
    steps: int
    latents: Tensor


@dataclass(frozen=True)
class FinishedRequest:
    request_id: int
    request: DenoiseRequest
    latents: Tensor  # (1, C, h, w), the single path's `output_type="latent"`


@dataclass
class _Request:
    """A request's denoising state: everything the single-image pipeline loop keeps per call."""

    request: DenoiseRequest
    scheduler: SchedulerMixin
    timesteps: Tensor
    latents: Tensor
    step_kwargs: dict[str, Any]  # eta and the image's generator, where the scheduler's step takes them
    cfg: bool  # uncond rows run: diffusers' rule, guidance_scale > 1
    split: bool  # GuidedUNet's: the extras see `[uncond; cond]` halves
    guide: RowGuidance | None
    settings: GuidanceSettings
    prompt_embeds: Tensor  # (rows, seq, dim): [negative; positive] or [positive]
    text_embeds: Tensor  # (rows, pooled dim)
    time_ids: Tensor  # (rows, 6), the pipeline's plain size conditioning
    blend: RowBlend | None = None  # after every scheduler step (inpaint's unmasked latents)
    done: int = 0

    @property
    def rows(self) -> int:
        return 2 if self.cfg else 1

    @property
    def steps(self) -> int:
        return len(self.timesteps)


@dataclass
class _Layout:
    """The concatenated per-request tensors that stay fixed while membership does."""

    members: tuple[int, ...]
    prompt_embeds: Tensor
    text_embeds: Tensor


class BatchDenoiser:
    """Denoises many requests together, one step of each per UNet call. One per base pipeline + setup.

    Every request's `batch_key` must equal the first one's (`add` refuses others). The caller keeps
    the pipeline's per-task state (that key's LoRAs, FreeU) set while it uses one, and calls it from
    one thread under `torch.inference_mode()`.
    """

    def __init__(self, pipe: StableDiffusionXLPipeline) -> None:
        self.pipe = pipe
        self.unet = pipe.unet  # the bare UNet: guidance is applied here, per request
        self.device = pipe._execution_device
        self.dtype = pipe.text_encoder_2.dtype  # what the pipeline casts prompt embeds (and so latents) to
        self._requests: dict[int, _Request] = {}  # active, in join order
        self._finished: dict[int, FinishedRequest] = {}
        self._ids = itertools.count()
        self._layout: _Layout | None = None
        self.key: BatchKey | None = None  # the first request's; every later one must match it

    def __len__(self) -> int:
        """Active requests (not yet finished or dropped)."""
        return len(self._requests)

    @property
    def rows(self) -> int:
        """UNet rows the next step runs."""
        return sum(state.rows for state in self._requests.values())

    def add(self, request: DenoiseRequest) -> int:
        """Join at the next step; returns the request's id. ValueError: the plan cannot join this batch."""
        plan = request.plan
        key = request.key
        if key is None:
            raise ValueError(f"plan {plan.task_id!r} cannot be batched (see batch_key)")
        if self.key is not None and key != self.key:
            raise ValueError(f"plan {plan.task_id!r} does not share this batch's models or size: {key} != {self.key}")
        self.key = key
        request_id = next(self._ids)
        self._requests[request_id] = self._start(request)
        self._layout = None
        return request_id

    def drop(self, request_id: int) -> None:
        """Stop or skip: the request's rows leave the batch (a finished, uncollected one is discarded)."""
        if self._requests.pop(request_id, None) is not None:
            self._layout = None
        self._finished.pop(request_id, None)

    def finished(self) -> list[FinishedRequest]:
        """Requests whose steps are all done since the last call, in join order."""
        done = list(self._finished.values())
        self._finished.clear()
        return done

    def step(self) -> list[StepResult]:
        """One batched UNet call and one scheduler step of every active request."""
        if not self._requests:
            return []
        layout = self._current_layout()
        states = [self._requests[request_id] for request_id in layout.members]
        samples: list[Tensor] = []
        timesteps: list[Tensor] = []
        time_ids: list[Tensor] = []
        progress: list[Any] = []
        for state in states:
            t = state.timesteps[state.done]
            sample = torch.cat([state.latents] * 2) if state.cfg else state.latents
            sample = state.scheduler.scale_model_input(sample, t)
            samples.append(sample)
            # float32 per row: the UNet's time embedding casts integer timesteps to float anyway
            timesteps.append(t.to(torch.float32).reshape(1).expand(state.rows))
            row_progress = state.guide.progress(t) if state.guide is not None else None
            progress.append(row_progress)
            if state.guide is not None and state.settings.uses_adm:
                time_ids.append(state.guide.adm_time_ids(sample, state.time_ids, row_progress, state.split))
            else:
                time_ids.append(state.time_ids)
        out = self.unet(
            torch.cat(samples),
            torch.cat(timesteps),
            encoder_hidden_states=layout.prompt_embeds,
            timestep_cond=None,
            cross_attention_kwargs=None,
            added_cond_kwargs={"text_embeds": layout.text_embeds, "time_ids": torch.cat(time_ids)},
            return_dict=False,
        )[0]
        results: list[StepResult] = []
        offset = 0
        for request_id, state, sample, row_progress in zip(layout.members, states, samples, progress, strict=True):
            rows = out[offset : offset + state.rows]
            offset += state.rows
            t = state.timesteps[state.done]
            noise = self._combine(state, sample, rows, t, row_progress)
            state.latents = state.scheduler.step(noise, t, state.latents, **state.step_kwargs, return_dict=False)[0]
            if state.blend is not None:
                state.latents = state.blend(state.scheduler, state.timesteps, state.done, state.latents)
            state.done += 1
            results.append(StepResult(request_id, state.request.image_index, state.done, state.steps, state.latents))
            if state.done == state.steps:
                del self._requests[request_id]
                self._layout = None
                self._finished[request_id] = FinishedRequest(request_id, state.request, state.latents)
        return results

    # -- per request -----------------------------------------------------------------------------
    def _start(self, request: DenoiseRequest) -> _Request:
        """The single-image pipeline call's set-up, in its order (timesteps, then noise)."""
        plan = request.plan
        scheduler = make_scheduler(plan.sampler_name, plan.scheduler_name, self.pipe.scheduler.config)
        prepare_for_image(scheduler, request.seed)
        # A CPU generator even on CUDA, as the single path: the seed gives the same noise everywhere.
        generator = torch.Generator(device="cpu").manual_seed(request.seed)
        if request.start is None:
            timesteps, latents = self._from_noise(scheduler, plan, generator)
        else:
            timesteps, latents = self._from_image(scheduler, plan, request.start, generator)
        height, width = (side * self.pipe.vae_scale_factor for side in latents.shape[-2:])
        settings = guidance_settings(plan)
        cfg = plan.guidance_scale > 1  # StableDiffusionXLPipeline.do_classifier_free_guidance
        cond = request.conditioning
        positive = cond.prompt_embeds.to(dtype=self.dtype, device=self.device)
        negative = cond.negative_prompt_embeds.to(dtype=self.dtype, device=self.device)
        pooled = cond.pooled_prompt_embeds.to(self.device)
        negative_pooled = cond.negative_pooled_prompt_embeds.to(self.device)
        # original size, crop (0, 0), target size: the latents' own, as both SDXL pipelines default them
        size = [float(height), float(width), 0.0, 0.0, float(height), float(width)]
        time_ids = torch.tensor([size] * (2 if cfg else 1), dtype=self.dtype, device=self.device)
        keep = request.start.keep if request.start is not None else None
        return _Request(
            request=request,
            scheduler=scheduler,
            timesteps=timesteps,
            latents=latents,
            step_kwargs=_step_kwargs(scheduler, generator),
            cfg=cfg,
            split=settings.uses_cfg and cfg,
            guide=row_guidance(settings, scheduler, self.pipe.vae_scale_factor),
            settings=settings,
            prompt_embeds=torch.cat([negative, positive]) if cfg else positive,
            text_embeds=torch.cat([negative_pooled, pooled]) if cfg else pooled,
            time_ids=time_ids,
            blend=keep(request.seed) if keep is not None else None,
        )

    def _from_noise(
        self, scheduler: SchedulerMixin, plan: GenerationPlan, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """StableDiffusionXLPipeline: the whole schedule, from noise at the first sigma."""
        scheduler.set_timesteps(plan.steps, device=self.device)
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(0)
        shape = (1, self.unet.config.in_channels, plan.height // self.pipe.vae_scale_factor,
                 plan.width // self.pipe.vae_scale_factor)  # fmt: skip
        latents = randn_tensor(shape, generator=generator, device=self.device, dtype=self.dtype)
        return scheduler.timesteps, latents * scheduler.init_noise_sigma

    def _from_image(
        self, scheduler: SchedulerMixin, plan: GenerationPlan, start: ImageStart, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """StableDiffusionXLImg2ImgPipeline (get_timesteps, prepare_latents) at Fooocus's schedule:
        the last `plan.steps` steps of a longer one, from the image's latents noised to the first."""
        schedule, strength = fooocus_schedule(plan.steps, start.denoise)
        scheduler.set_timesteps(schedule, device=self.device)
        begin = (schedule - min(int(schedule * strength), schedule)) * scheduler.order
        timesteps = scheduler.timesteps[begin:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(begin)
        initial = start.latents.to(device=self.device, dtype=self.dtype)
        noise = randn_tensor(initial.shape, generator=generator, device=self.device, dtype=self.dtype)
        return timesteps, scheduler.add_noise(initial, noise, timesteps[:1])

    @staticmethod
    def _combine(state: _Request, sample: Tensor, out: Tensor, t: Tensor, progress: Any) -> Tensor:
        """The request's noise prediction from its rows, as the single path's GuidedUNet + diffusers give it."""
        if not state.cfg:
            return out
        if state.split and state.guide is not None and state.settings.reshapes_prediction:
            # GuidedUNet returns this for both halves; diffusers' `f + s * (f - f)` is `f` exactly.
            return state.guide.final_prediction(sample, out, t, progress)
        uncond, cond = out.chunk(2)
        return uncond + state.settings.guidance_scale * (cond - uncond)

    def _current_layout(self) -> _Layout:
        members = tuple(self._requests)
        if self._layout is None or self._layout.members != members:
            states = [self._requests[request_id] for request_id in members]
            self._layout = _Layout(
                members=members,
                prompt_embeds=torch.cat(_same_length(state.prompt_embeds for state in states)),
                text_embeds=torch.cat([state.text_embeds for state in states]),
            )
        return self._layout


def _same_length(embeds: Iterable[Tensor]) -> list[Tensor]:
    """Prompt embeds tiled along the sequence to the lcm of their lengths, as `match_lengths` does for
    one prompt pair: attention over a repeated key set is the same, so rows of prompts with different
    chunk counts share a call."""
    embeds = list(embeds)
    length = math.lcm(*(e.shape[1] for e in embeds))
    return [e.repeat(1, length // e.shape[1], 1) if e.shape[1] != length else e for e in embeds]


def _step_kwargs(scheduler: SchedulerMixin, generator: torch.Generator) -> dict[str, Any]:
    """StableDiffusionXLPipeline.prepare_extra_step_kwargs: eta and generator where `step` takes them."""
    accepted = set(inspect.signature(scheduler.step).parameters)
    kwargs: dict[str, Any] = {}
    if "eta" in accepted:
        kwargs["eta"] = step_eta(scheduler)
    if "generator" in accepted:
        kwargs["generator"] = generator
    return kwargs


# -- tasks' images as rows of one batch --------------------------------------------------------

# Between steps, plans that may join (same batch key), with their hooks; `free` is the image slots open.
Admit = Callable[[BatchKey, int], list[tuple[GenerationPlan, GenerationHooks]]]
# A plan's end: its images (by image index), "finished" or "stopped", or the error that failed it.
Done = Callable[[GenerationPlan, list[GeneratedImage], Status, Exception | None], None]
# (n, C, h, w) finished latents of one size -> their n images, in one VAE call.
Decode = Callable[[Tensor], list[Image.Image]]
# A plan's start: its vary input's latents, or None (text to image). Called once per plan.
StartFor = Callable[[GenerationPlan], ImageStart | None]
# After every batched step, before its results are reported: the step's results.
AfterStep = Callable[[list[StepResult]], None]


def _from_noise(_plan: GenerationPlan) -> ImageStart | None:
    return None


@dataclass
class _PlanRun:
    plan: GenerationPlan
    hooks: GenerationHooks
    conditioning: ConditioningCache
    start: ImageStart | None
    waiting: list[int]  # image indexes not yet in the denoiser
    active: dict[int, int] = field(default_factory=dict)  # request id -> image index
    images: list[GeneratedImage] = field(default_factory=list)
    status: Status = "finished"
    error: Exception | None = None

    @property
    def done(self) -> bool:
        return not self.waiting and not self.active


@dataclass
class BatchRun:
    """Plans with one batch key through one BatchDenoiser, at most `max_batch` images at a time.

    Continuous batching: between steps `admit` (when given) is asked for more plans while image slots
    are free; they join at the next step, beside rows at other timesteps. Each plan's hooks see what
    the single path gives them: per image, on_step(index, 1..steps, steps), each followed by
    poll_control, where "skip" drops that image's rows only and "stop" ends that plan only. A plan
    ends through `on_done` as soon as its last image is decoded (the others go on); an error of one
    plan (non-finite latents, or its start image failing to load) fails that plan only. Images that
    finish at the same step are decoded together, up to `max_batch` per VAE call.
    """

    denoiser: BatchDenoiser
    conditioning_for: Callable[[GenerationPlan], ConditioningCache]
    max_batch: int
    decode: Decode
    on_done: Done
    admit: Admit | None = None
    start_for: StartFor = _from_noise
    after_step: AfterStep | None = None
    _plans: list[_PlanRun] = field(default_factory=list)

    def add(self, plan: GenerationPlan, hooks: GenerationHooks) -> None:
        start = self.start_for(plan)
        key = batch_key(plan, start.size if start is not None else None)
        if key is None or (self.denoiser.key is not None and key != self.denoiser.key):
            raise ValueError(f"plan {plan.task_id!r} cannot join this batch (see batch_key)")
        self._plans.append(_PlanRun(plan, hooks, self.conditioning_for(plan), start, list(range(len(plan.seeds)))))

    def run(self) -> None:
        while self._plans:
            self._fill()
            by_request = {rid: run for run in self._plans for rid in run.active}
            results = self.denoiser.step()
            if self.after_step is not None:
                self.after_step(results)
            for result in sorted(results, key=lambda r: (self._plans.index(by_request[r.request_id]), r.image_index)):
                run = by_request[result.request_id]
                if run.done or result.request_id not in run.active:
                    continue  # stopped earlier in this step's fan-out
                self._report(run, result)
            self._decode([(by_request[finished.request_id], finished) for finished in self.denoiser.finished()])
            for run in [run for run in self._plans if run.done]:
                self._plans.remove(run)
                self.on_done(run.plan, sorted(run.images, key=lambda image: image.image_index), run.status, run.error)

    def _decode(self, finished: list[tuple[_PlanRun, FinishedRequest]]) -> None:
        """The step's finished images into their plans: one VAE call per `max_batch` of them.

        Non-finite latents fail their own plan before the call, so one broken row costs no one else
        their image; an error of the call itself fails the plans whose images were in it.
        """
        ready: list[tuple[_PlanRun, FinishedRequest]] = []
        for run, done in finished:
            run.active.pop(done.request_id, None)
            try:
                check_finite(done.latents)
            except Exception as exc:
                self._fail(run, exc)
                continue
            ready.append((run, done))
        ready = [(run, done) for run, done in ready if run.error is None]  # a failed plan's other rows too
        size = max(1, self.max_batch)
        for first in range(0, len(ready), size):
            group = ready[first : first + size]
            try:
                images = self.decode(torch.cat([done.latents for _run, done in group]))
            except Exception as exc:
                for run, _done in group:
                    self._fail(run, exc)
                continue
            for (run, done), image in zip(group, images, strict=True):
                if run.error is None:
                    run.images.append(GeneratedImage(done.request.image_index, done.request.seed, image))

    def _fill(self) -> None:
        """New plans first (admitted while slots are free), then waiting images, oldest plan first."""
        first = self._plans[0]
        key = self.denoiser.key or batch_key(first.plan, first.start.size if first.start is not None else None)
        waiting = sum(len(run.waiting) for run in self._plans)
        free = self.max_batch - len(self.denoiser) - waiting
        if self.admit is not None and free > 0 and key is not None:
            for plan, hooks in self.admit(key, free):
                try:
                    self.add(plan, hooks)
                except Exception as exc:  # its start image would not load: it fails alone
                    self.on_done(plan, [], "finished", exc)
        for run in self._plans:
            while run.waiting and len(self.denoiser) < self.max_batch:
                index = run.waiting.pop(0)
                request = DenoiseRequest.of(run.plan, index, run.conditioning, run.start)
                run.active[self.denoiser.add(request)] = index

    def _report(self, run: _PlanRun, result: StepResult) -> None:
        preview = not (run.plan.disable_preview or run.plan.black_out_nsfw)  # Fooocus hides previews too
        wanted = preview and preview_wanted(run.hooks, result.image_index)
        jpeg = latent_preview_jpeg(result.latents) if wanted else None
        try:
            run.hooks.on_step(result.image_index, result.step, result.steps, jpeg)
            action = run.hooks.poll_control()
        except Exception as exc:  # the plan's caller gave up on it (its task ended elsewhere)
            self._fail(run, exc)
            return
        if action == "stop":
            run.status = "stopped"
            self._drop_all(run)
        elif action == "skip":
            self.denoiser.drop(result.request_id)
            run.active.pop(result.request_id, None)

    def _fail(self, run: _PlanRun, exc: Exception) -> None:
        run.error = run.error or exc
        self._drop_all(run)

    def _drop_all(self, run: _PlanRun) -> None:
        for request_id in list(run.active):
            self.denoiser.drop(request_id)
        run.active.clear()
        run.waiting.clear()


def run_one_plan(
    plan: GenerationPlan, denoiser: BatchDenoiser, conditioning: ConditioningCache, hooks: GenerationHooks,
    max_batch: int, decode: Decode, start: ImageStart | None = None, after_step: AfterStep | None = None,
) -> tuple[list[GeneratedImage], Status]:
    """One task's images as rows of one batch (no joiners); an error is raised, as on the single path."""
    ended: list[tuple[list[GeneratedImage], Status, Exception | None]] = []
    batch = BatchRun(denoiser, lambda _plan: conditioning, max_batch, decode,
                     on_done=lambda _plan, images, status, error: ended.append((images, status, error)),
                     start_for=lambda _plan: start, after_step=after_step)  # fmt: skip
    batch.add(plan, hooks)
    batch.run()
    images, status, error = ended[0]
    if error is not None:
        raise error
    return images, status
