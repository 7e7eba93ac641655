"""GenerationPlan -> images, on diffusers' StableDiffusionXLPipeline.

One image per seed, each denoised separately so that progress, previews, skip and stop work per
image and an image's pixels depend only on (plan, seed), not on its neighbours in the batch.
Denoising returns latents; the VAE decode happens here, only for images that ran to the end.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import msgspec
import torch
from diffusers import StableDiffusionXLPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from PIL import Image

from fooocus_es.engine.demo.loras import ensure_demo_lora
from fooocus_es.engine.diffusion import image_prompts
from fooocus_es.engine.diffusion.batching import (
    Admit,
    BatchDenoiser,
    BatchRun,
    Done,
    ImageStart,
    auto_max_batch,
    batch_key,
    run_one_plan,
)
from fooocus_es.engine.diffusion.enhance import Enhancer, enhance_input
from fooocus_es.engine.diffusion.guided_unet import GuidedUNet
from fooocus_es.engine.diffusion.image_prompt_models import ImagePromptModels
from fooocus_es.engine.diffusion.image_to_image import ImageToImage, vary_input_size
from fooocus_es.engine.diffusion.sampling import (
    Aborted,
    ConditioningCache,
    Control,
    GeneratedImage,
    GenerationFailed,
    GenerationHooks,
    Status,
    StepCallback,
    decode_latents,
    decode_latents_batch,
    guidance_settings,
    scale_latents,
    task_pipeline,
    unscale_latents,
)
from fooocus_es.engine.diffusion.schedulers import make_scheduler, prepare_for_image, step_eta
from fooocus_es.engine.models.expansion import ExpansionModels, FooocusExpansion
from fooocus_es.engine.models.loras import LoraSpec, LoraUnsupported, activate_loras
from fooocus_es.engine.models.store import SAFETY_CHECKER, ModelMissing, ModelStore, ModelUnsupported
from fooocus_es.engine.planning.demo_names import DEMO_CHECKPOINT
from fooocus_es.engine.planning.plan_types import BatchKey, GenerationPlan, ModelSetup, VaryTask
from fooocus_es.engine.planning.tool_types import ToolCall
from fooocus_es.engine.tools.toolbox import ToolBox, ToolResult

__all__ = ["Control", "Engine", "GeneratedImage", "GenerationFailed", "GenerationHooks", "Status"]


@dataclass
class _TaskModels:
    """The loaded models one task runs on; the store may evict them later, this keeps them alive meanwhile."""

    base: StableDiffusionXLPipeline
    refiner: StableDiffusionXLPipeline | None
    vae: Any  # AutoencoderKL: the override from models/vae, or the base checkpoint's own
    safety: Any = None  # SafetyChecker when the task blacks out NSFW images


@dataclass(frozen=True)
class _ActiveSetup:
    """The setup on the shared pipelines now, and which pipeline objects carry it (weakly: a
    pipeline the cache dropped and reloaded is a new object, with none of it)."""

    setup: ModelSetup
    base: weakref.ref[Any]
    refiner: weakref.ref[Any] | None

    def holds(self, setup: ModelSetup, models: _TaskModels) -> bool:
        refiner = self.refiner() if self.refiner is not None else None
        return setup == self.setup and self.base() is models.base and refiner is models.refiner


class Engine:
    """Runs plans on the pipelines of a ModelStore. One engine per device, used from one thread."""

    def __init__(self, store: ModelStore, data_dir: Path | None = None, *, max_batch: int = 1) -> None:
        """`max_batch`: images of one task denoised together per UNet call (batching.py); 1 runs
        them one after another, one pipeline call each; 0 picks it from the device (auto_max_batch)."""
        if max_batch < 0:
            raise ValueError(f"max_batch must be at least 1 (or 0: by the device), got {max_batch}")
        self.store = store
        self.max_batch = max_batch or auto_max_batch(store.device)
        # Image tasks and image prompts read their inputs (inputs/...) relative to the data dir.
        self.data_dir = data_dir or Path.cwd()
        self.image_to_image = ImageToImage(
            store.models_dir, self.data_dir, store.device, store.dtype, construction=store.construction,
            max_batch=self.max_batch,
        )
        self.image_prompt_models = ImagePromptModels(
            store.models_dir, store.device, store.dtype, construction=store.construction
        )
        self.tools = ToolBox(store.models_dir, store.device, store.dtype, construction=store.construction)
        self.expansion_models = ExpansionModels(
            store.models_dir, store.device, store.dtype, construction=store.construction
        )
        self._active: _ActiveSetup | None = None
        # clean_vram (store.free) drops these too, not only the cached pipelines.
        for name, holder in (
            ("image prompts", self.image_prompt_models), ("tools", self.tools), ("V2 expansion", self.expansion_models)
        ):  # fmt: skip
            store.hold_outside(name, holder.free)

    def run_tool(self, call: ToolCall) -> ToolResult:
        """describe-image or generate_mask on this device, on the stored input image."""
        with Image.open(self.data_dir / call.image) as stored:
            image = stored.convert("RGB")  # Fooocus's tools take HWC3 RGB
        return self.tools.run(call, image)

    def prepare(self, plan: GenerationPlan) -> None:
        """Validate the plan and load its models and LoRAs, so failures surface before any progress."""
        _validate(plan)
        models = self._models(plan)
        self._configure(models, plan)
        task_pipeline(models.base, _scheduler(plan, models.base), guidance_settings(plan), models.vae)
        if plan.image_prompts:
            image_prompts.load_for(plan, self.image_prompt_models, models.base.unet)
        if any(plan.expansion_sources):
            self._expansion_model(plan)

    def generate(self, plan: GenerationPlan, hooks: GenerationHooks) -> tuple[list[GeneratedImage], Status]:
        """Images for every seed that was neither skipped nor stopped, and whether the task was stopped."""
        _validate(plan)
        models = self._models(plan)
        self._configure(models, plan)
        plan = self.expanded(plan)
        if plan.image_prompts and plan.control.debug_preprocessor:
            return self._preprocessed_image_prompts(plan), "finished"
        prompts = image_prompts.build_hooks(plan, self.image_prompt_models, models.base.unet, self.data_dir)
        if plan.enhance is not None and plan.enhance.input_image:
            images, status = enhance_input(plan, self.data_dir), "finished"  # the enhance tab: no generation
        elif self._batches_images(plan):
            images, status = self._images_batched(plan, models, hooks)
        elif plan.image_task is not None:
            images, status = self._image_task(plan, models, hooks, prompts)
        else:
            images, status = self._text_to_image(plan, models, hooks, prompts)
        if plan.enhance is not None and status == "finished":
            images, status = Enhancer(plan, self.generate, self.tools, self.data_dir).run(images, hooks)
        if models.safety is not None and images:
            checked, _flags = models.safety.black_out([generated.image for generated in images])
            images = [replace(generated, image=image) for generated, image in zip(images, checked, strict=True)]
        return _with_expansions(plan, images), status

    def expanded(self, plan: GenerationPlan) -> GenerationPlan:
        """`plan` with each image's Fooocus V2 expansion made (from its source text and seed)."""
        if not any(plan.expansion_sources) or plan.expansions:
            return plan
        model = self._expansion_model(plan)
        made: dict[tuple[str, int], str] = {}  # equal seeds (disable_seed_increment) expand alike
        for source, seed in zip(plan.expansion_sources, plan.seeds, strict=False):
            if source and (source, seed) not in made:
                made[source, seed] = model.expand(source, seed)
        expansions = tuple(
            made.get((source, seed), "") for source, seed in zip(plan.expansion_sources, plan.seeds, strict=False)
        )
        return msgspec.structs.replace(plan, expansions=expansions)

    def _expansion_model(self, plan: GenerationPlan) -> FooocusExpansion:
        return self.expansion_models.get(demo=plan.base_model == DEMO_CHECKPOINT)

    def _preprocessed_image_prompts(self, plan: GenerationPlan) -> list[GeneratedImage]:
        """debugging_cn_preprocessor: each image prompt's preprocessed input as a result, no diffusion."""
        arrays = image_prompts.preprocessed_images(plan, self.image_prompt_models, self.data_dir)
        return [
            GeneratedImage(image_index=index, seed=plan.seeds[0], image=Image.fromarray(array))
            for index, array in enumerate(arrays)
        ]

    def _image_task(
        self,
        plan: GenerationPlan,
        models: _TaskModels,
        hooks: GenerationHooks,
        prompts: image_prompts.ImagePromptHooks | None = None,
    ) -> tuple[list[GeneratedImage], Status]:
        def make_pipe(pipeline_class: type[Any]) -> Any:
            scheduler = _scheduler(plan, models.base)
            return task_pipeline(models.base, scheduler, guidance_settings(plan), models.vae, pipeline_class, prompts)

        with torch.inference_mode():
            conditioning = ConditioningCache(models.base, plan.clip_skip)
            return self.image_to_image.generate(plan, make_pipe, models.vae, conditioning, hooks, models.base)

    def _text_to_image(
        self,
        plan: GenerationPlan,
        models: _TaskModels,
        hooks: GenerationHooks,
        prompts: image_prompts.ImagePromptHooks | None = None,
    ) -> tuple[list[GeneratedImage], Status]:
        scheduler = _scheduler(plan, models.base)
        task_pipe = task_pipeline(models.base, scheduler, guidance_settings(plan), models.vae, image_prompts=prompts)
        images: list[GeneratedImage] = []
        status: Status = "finished"
        with torch.inference_mode():
            conditioning = ConditioningCache(models.base, plan.clip_skip)
            refiner = _RefinerSwitch(plan, models, conditioning) if models.refiner is not None else None
            for index, seed in enumerate(plan.seeds):
                try:
                    latents = _denoise(task_pipe, plan, index, seed, hooks, conditioning, refiner)
                except Aborted as aborted:
                    if aborted.action == "stop":
                        status = "stopped"
                        break
                    continue  # skip: this image is dropped, the next one starts
                finally:
                    if refiner is not None:
                        refiner.restore(task_pipe)
                vae = refiner.decode_vae if refiner is not None and refiner.swapped_vae else models.vae
                image = decode_latents(task_pipe, vae, latents)
                images.append(GeneratedImage(image_index=index, seed=seed, image=image))
        return images, status

    def _batches_images(self, plan: GenerationPlan) -> bool:
        """A task's own images as rows of one batch: text to image or vary, more than one image."""
        return self.max_batch > 1 and len(plan.seeds) > 1 and self._batch_key(plan) is not None

    def _images_batched(
        self, plan: GenerationPlan, models: _TaskModels, hooks: GenerationHooks
    ) -> tuple[list[GeneratedImage], Status]:
        """The task's images as rows of one batch, up to `max_batch` per UNet call."""
        # Built as the single path builds it, so an unsupported scheduler fails with the same message.
        task_pipe = task_pipeline(models.base, _scheduler(plan, models.base), guidance_settings(plan), models.vae)
        with torch.inference_mode():
            return run_one_plan(
                plan, BatchDenoiser(models.base), ConditioningCache(models.base, plan.clip_skip), hooks,
                self.max_batch, decode=lambda latents: decode_latents_batch(task_pipe, models.vae, latents),
                start=self._start_for(plan, models),
            )  # fmt: skip

    def _batch_key(self, plan: GenerationPlan) -> BatchKey | None:
        """batch_key, with a vary plan's latent size read from its input's header."""
        if isinstance(plan.image_task, VaryTask):
            return batch_key(plan, vary_input_size(self.data_dir, plan.image_task))
        return batch_key(plan)

    def _start_for(self, plan: GenerationPlan, models: _TaskModels) -> ImageStart | None:
        """Where a batched plan's rows start: a vary input's latents (this task's VAE), or noise."""
        if isinstance(plan.image_task, VaryTask):
            return self.image_to_image.vary_start(plan, models.vae)
        return None

    def batches_tasks(self, plan: GenerationPlan) -> bool:
        """Whether `plan` runs through `generate_batch`, other tasks joining it (--max-batch > 1)."""
        return (
            self.max_batch > 1 and self._batch_key(plan) is not None
            and not plan.black_out_nsfw and plan.enhance is None
        )  # fmt: skip

    def batch_key_of(self, plan: GenerationPlan) -> BatchKey | None:
        """The key tasks joining `plan`'s batch must have; None when it does not run in one."""
        return self._batch_key(plan) if self.batches_tasks(plan) else None

    def generate_batch(self, plan: GenerationPlan, hooks: GenerationHooks, *, admit: Admit, on_done: Done) -> None:
        """`plan` and every plan `admit` returns between steps, denoised together (continuous
        batching across tasks); each plan ends through `on_done` as soon as its images are decoded.

        Admitted plans share the batch key, so the models and their state set for `plan` are theirs
        too (the key holds the model setup); the caller `prepare`s each before admitting it, so a
        plan the engine refuses fails alone. A failure of the whole call (the UNet raising) is raised.
        """
        _validate(plan)
        models = self._models(plan)
        self._configure(models, plan)
        plan = self.expanded(plan)
        task_pipe = task_pipeline(models.base, _scheduler(plan, models.base), guidance_settings(plan), models.vae)

        def admit_expanded(key: BatchKey, free: int) -> list[tuple[GenerationPlan, GenerationHooks]]:
            return [(self.expanded(joined), joined_hooks) for joined, joined_hooks in admit(key, free)]

        def done(joined: GenerationPlan, images: list[GeneratedImage], status: Status, error: Exception | None) -> None:
            on_done(joined, _with_expansions(joined, images), status, error)

        with torch.inference_mode():
            batch = BatchRun(
                BatchDenoiser(models.base), lambda joined: ConditioningCache(models.base, joined.clip_skip),
                self.max_batch, decode=lambda latents: decode_latents_batch(task_pipe, models.vae, latents),
                on_done=done, admit=admit_expanded, start_for=lambda joined: self._start_for(joined, models),
            )  # fmt: skip
            batch.add(plan, hooks)
            batch.run()

    # -- models ----------------------------------------------------------------------------------
    def _models(self, plan: GenerationPlan) -> _TaskModels:
        keep = {name for name in (plan.base_model, plan.refiner_model, plan.vae_name) if name}
        if plan.black_out_nsfw:
            keep.add(SAFETY_CHECKER)
        try:
            base = self.store.load_pipeline(plan.base_model, keep=keep)
            refiner = self.store.load_pipeline(plan.refiner_model, keep=keep) if plan.refiner_model else None
            vae = self.store.load_vae(plan.vae_name, keep=keep) if plan.vae_name else base.vae
            safety = self.store.load_safety_checker(keep=keep) if plan.black_out_nsfw else None
        except ModelUnsupported as exc:
            raise GenerationFailed(str(exc)) from exc
        if refiner is not None:
            _check_refiner(plan.refiner_model or "", base, refiner)
        return _TaskModels(base=base, refiner=refiner, vae=vae, safety=safety)

    def _configure(self, models: _TaskModels, plan: GenerationPlan) -> None:
        """Per-task state on the shared models: exactly this task's LoRAs and FreeU (or none).

        Set once per setup: `prepare` then `generate` of one task, or tasks with equal setups on
        the same loaded pipelines, find it active and do nothing.
        """
        setup = plan.model_setup()
        if self._active is not None and self._active.holds(setup, models):
            return
        self._active = None  # a failure below leaves the models in an unknown state
        with self.store.construction:  # LoRA loads build modules: one at a time in the process
            self._apply_setup(models, plan)
        self._active = _ActiveSetup(setup, weakref.ref(models.base), models.refiner and weakref.ref(models.refiner))

    def _apply_setup(self, models: _TaskModels, plan: GenerationPlan) -> None:
        specs = [LoraSpec(name, weight) for name, weight in plan.loras]
        try:
            activate_loras(models.base, specs, self._lora_path)
        except LoraUnsupported as exc:
            raise GenerationFailed(str(exc)) from exc
        for pipe in (models.base, models.refiner):
            if pipe is not None:
                _set_freeu(pipe.unet, plan.freeu)
        if models.refiner is not None:
            # Fooocus patches the refiner with the LoRAs that fit it and skips the others.
            try:
                activate_loras(models.refiner, specs, self._lora_path)
            except LoraUnsupported:
                activate_loras(models.refiner, [], self._lora_path)

    def _lora_path(self, name: str) -> Path:
        path = self.store.path("loras", name)
        if not path.is_file():
            demo = ensure_demo_lora(self.store.folder("loras"), name)
            if demo is not None:
                return demo
            raise ModelMissing(name, path)
        return path


def _with_expansions(plan: GenerationPlan, images: list[GeneratedImage]) -> list[GeneratedImage]:
    if not plan.expansions:
        return images
    return [replace(generated, prompt_expansion=plan.expansion_for(generated.image_index)) for generated in images]


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


def _set_freeu(unet: Any, freeu: tuple[float, float, float, float] | None) -> None:
    """FreeU lives on the shared UNet's up blocks, so every task sets it: on with its values, or off."""
    if freeu is None:
        unet.disable_freeu()
    else:
        b1, b2, s1, s2 = freeu
        unet.enable_freeu(s1=s1, s2=s2, b1=b1, b2=b2)


def _check_refiner(name: str, base: StableDiffusionXLPipeline, refiner: StableDiffusionXLPipeline) -> None:
    """Refiners are SDXL models of the base's architecture (what joint swapping needs)."""
    if refiner.unet.config.cross_attention_dim != base.unet.config.cross_attention_dim or (
        refiner.unet.config.addition_time_embed_dim != base.unet.config.addition_time_embed_dim
    ):
        raise GenerationFailed(
            f"refiner {name!r} does not share the base model's architecture (text context "
            f"{refiner.unet.config.cross_attention_dim} vs {base.unet.config.cross_attention_dim}); "
            "use an SDXL base-architecture checkpoint as refiner, or None"
        )


class _RefinerSwitch:
    """Hands the sampling over to the refiner after `plan.refiner_switch_step` steps (Fooocus's swap methods).

    joint: the refiner's UNet continues the same schedule on the same conditioning.
    separate: the same, with the prompts re-encoded by the refiner's own text encoders.
    vae: like separate, and the latents go through the base VAE's decoder and the refiner VAE's encoder.
    """

    def __init__(self, plan: GenerationPlan, models: _TaskModels, base_conditioning: ConditioningCache) -> None:
        assert models.refiner is not None
        self.plan = plan
        self.models = models
        self.refiner: StableDiffusionXLPipeline = models.refiner
        self.method = plan.refiner_swap_method
        self.own_conditioning = ConditioningCache(self.refiner, plan.clip_skip) if self.method != "joint" else None
        self.swapped_vae = False
        self._base_unet: Any = None
        self._image_prompts: image_prompts.ImagePromptHooks | None = None

    @property
    def decode_vae(self) -> Any:
        return self.refiner.vae

    def active_for(self, plan: GenerationPlan) -> bool:
        return plan.refiner_switch_step < plan.steps

    def swap(self, pipe: StableDiffusionXLPipeline, index: int, tensors: dict[str, torch.Tensor]) -> None:
        """Called from the step callback once the base has run its steps; edits `tensors` in place."""
        holder = pipe.unet if isinstance(pipe.unet, GuidedUNet) else None
        self._base_unet = holder.unet if holder is not None else pipe.unet
        if holder is not None:
            holder.unet = self.refiner.unet
            # Fooocus drops image prompts at the switch: the refiner has no IP layers or ControlNet.
            self._image_prompts, holder.image_prompts = holder.image_prompts, None
        else:
            pipe.unet = self.refiner.unet
        if self.own_conditioning is not None:
            cond = self.own_conditioning.for_image(self.plan, index)
            both = pipe.do_classifier_free_guidance
            tensors["prompt_embeds"] = _stack(cond.negative_prompt_embeds, cond.prompt_embeds, both)
            tensors["add_text_embeds"] = _stack(cond.negative_pooled_prompt_embeds, cond.pooled_prompt_embeds, both)
        if self.method == "vae":
            tensors["latents"] = _reencode(tensors["latents"], self.models.vae, self.refiner.vae, pipe)
            self.swapped_vae = True

    def restore(self, pipe: StableDiffusionXLPipeline) -> None:
        """Back to the base UNet for the task's next image."""
        if self._base_unet is None:
            return
        if isinstance(pipe.unet, GuidedUNet):
            pipe.unet.unet = self._base_unet
            pipe.unet.image_prompts = self._image_prompts
        else:
            pipe.unet = self._base_unet
        self._base_unet = None


def _stack(negative: torch.Tensor, positive: torch.Tensor, cfg: bool) -> torch.Tensor:
    return torch.cat([negative, positive]) if cfg else positive


def _reencode(latents: torch.Tensor, source_vae: Any, target_vae: Any, pipe: StableDiffusionXLPipeline) -> torch.Tensor:
    """Latents decoded by one VAE and encoded by another (Fooocus's `vae` refiner swap)."""
    pixels = source_vae.decode(unscale_latents(latents.to(source_vae.dtype), source_vae), return_dict=False)[0]
    encoded = target_vae.encode(pixels.to(target_vae.dtype)).latent_dist.mean
    return scale_latents(encoded, target_vae).to(latents.dtype)


def _denoise(
    pipe: StableDiffusionXLPipeline,
    plan: GenerationPlan,
    index: int,
    seed: int,
    hooks: GenerationHooks,
    conditioning: ConditioningCache,
    refiner: _RefinerSwitch | None = None,
) -> torch.Tensor:
    """Latents of one finished image; raises Aborted when the caller skips or stops it."""
    # A CPU generator even on CUDA: the seed gives the same initial noise on every device and GPU model.
    generator = torch.Generator(device="cpu").manual_seed(seed)
    prepare_for_image(pipe.scheduler, seed)
    switch = refiner if refiner is not None and refiner.active_for(plan) else None
    output = pipe(
        # Fooocus's encoding (emphasis, chunks past 77 tokens, clip_skip, parts); an empty negative is
        # encoded like any other text, not zeroed as diffusers' SDXL default would.
        **conditioning.pipeline_kwargs(plan, index),
        width=plan.width,
        height=plan.height,
        num_inference_steps=plan.steps,
        guidance_scale=plan.guidance_scale,
        generator=generator,
        eta=step_eta(pipe.scheduler),
        output_type="latent",
        callback_on_step_end=StepCallback(
            hooks,
            index,
            plan.steps,
            preview=not (plan.disable_preview or plan.black_out_nsfw),  # Fooocus hides previews too
            switch_at=plan.refiner_switch_step if switch is not None else None,
            on_switch=switch.swap if switch is not None else None,
        ),
        callback_on_step_end_tensor_inputs=["latents", "prompt_embeds", "add_text_embeds"],
    )
    return output.images
