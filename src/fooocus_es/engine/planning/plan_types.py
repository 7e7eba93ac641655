"""The engine's input: one frozen, pure description of a generation (no torch)."""

from __future__ import annotations

from typing import Literal

import msgspec

from fooocus_es.engine.planning.tool_types import MaskOptions


class _ImageTaskBase(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    """Image-to-image work on an input image: Fooocus's upscale/vary and inpaint/outpaint tabs."""

    image: str  # stored input, relative to the data dir (inputs/<sha256>.png)
    denoise: float = 1.0  # the strength: how much of the schedule runs on the input


class VaryTask(_ImageTaskBase, frozen=True, kw_only=True, tag="vary"):
    """Vary (Subtle / Strong): the input resized to SDXL's range, then img2img."""


class UpscaleTask(_ImageTaskBase, frozen=True, kw_only=True, tag="upscale"):
    """Upscale (1.5x / 2x / Fast 2x / Custom): super-resolution, then (unless Fast) a tiled img2img pass."""

    method: str  # the uov_method, for upscale's size rules
    upscale_factor: float = 1.0
    fast_upscale: bool = False  # Upscale (Fast 2x): the super-resolution output, no diffusion


class InpaintTask(_ImageTaskBase, frozen=True, kw_only=True, tag="inpaint"):
    """Inpaint / outpaint: diffuse the masked area (and any outpaint border) around a crop of the input."""

    mask: str | None = None  # stored mask image; None with outpaint = only the new area
    invert_mask: bool = False
    erode_or_dilate: int = 0
    respective_field: float = 1.0
    outpaint: tuple[str, ...] = ()
    outpaint_distance: tuple[int, int, int, int] = (0, 0, 0, 0)  # left, top, right, bottom; 0 = 30%
    disable_initial_latent: bool = False
    inpaint_engine: str = "None"
    debug_mask: bool = False  # debugging_inpaint_preprocessor: return the processed mask instead


# One struct per kind, so each carries only the fields its kind uses; callers dispatch with `match`.
ImageTask = VaryTask | UpscaleTask | InpaintTask

# Fooocus's image prompt types: two IP-Adapters (ImagePrompt, FaceSwap) and two ControlNets.
ImagePromptType = Literal["ImagePrompt", "FaceSwap", "PyraCanny", "CPDS"]
IP_ADAPTER_TYPES: tuple[ImagePromptType, ...] = ("ImagePrompt", "FaceSwap")
CONTROLNET_TYPES: tuple[ImagePromptType, ...] = ("PyraCanny", "CPDS")


class ImagePrompt(msgspec.Struct, frozen=True, kw_only=True):
    """One `controlnet_image` item that has an image (engine/diffusion/image_prompts.py applies it)."""

    cn_type: ImagePromptType
    image: str  # stored input, relative to the data dir (inputs/<sha256>.png)
    # Fooocus's "stop at": active on every UNet call whose timestep t >= 999 * (1 - stop).
    stop: float = 0.6
    weight: float = 0.6

    @property
    def is_control(self) -> bool:
        return self.cn_type in CONTROLNET_TYPES


class ControlSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The request-wide image prompt options (FooocusAPI names and defaults)."""

    softness: float = 0.25  # controlnet_softness: the high-resolution residuals scaled by 1 - softness
    canny_low: int = 64
    canny_high: int = 128
    skip_preprocessor: bool = False  # skipping_cn_preprocessor: images fed as they are
    debug_preprocessor: bool = False  # debugging_cn_preprocessor: return the preprocessed images, no diffusion


# Fooocus's refiner hand-over (engine/diffusion/pipeline.py _RefinerSwitch); the API admits only these.
RefinerSwapMethod = Literal["joint", "separate", "vae"]


class ModelSetup(msgspec.Struct, frozen=True, kw_only=True):
    """A task's state on the shared models: which pipelines, and the LoRAs and FreeU set on them.

    Gathered in one value because the models are shared: the engine sets it once per task (and
    not again while the same setup stays active), and a batch can only hold tasks with equal ones.
    """

    base_model: str
    refiner_model: str | None = None
    vae_name: str | None = None
    loras: tuple[tuple[str, float], ...] = ()
    freeu: tuple[float, float, float, float] | None = None


class BatchKey(msgspec.Struct, frozen=True, kw_only=True):
    """Tasks whose keys are equal can be denoised together (engine/diffusion/batching.py).

    Shared by every row of one UNet call: the models and their per-task state (setup: base,
    refiner, VAE, LoRAs and weights, FreeU), the latent size, and when the UNet is swapped for the
    refiner. Per row, so not here: prompts, seeds, steps, the sampler and scheduler (each row owns
    a scheduler instance), guidance scale, sharpness, adaptive CFG and ADM (combined per row).
    """

    setup: ModelSetup
    width: int
    height: int
    refiner_switch_step: int
    # "NoneType" for text to image, and for vary at its input's size (batching.batch_key): both are
    # plain rows from the first step on; other image tasks never share a call with another task
    # (an inpaint task's rows have "InpaintTask:<task id>": its images batch among themselves only).
    image_task: str
    # Image prompts change the UNet call itself (IP tokens in attention, ControlNet residuals).
    image_prompts: tuple[ImagePrompt, ...] = ()
    control: ControlSettings | None = None


class GenerationPlan(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the pipeline needs to produce a task's images, already resolved.

    Built from a request by `engine.planning.plan.build_plan`; the runner hands it to `Engine.generate`.
    """

    task_id: str
    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance_scale: float
    seeds: tuple[int, ...]  # one per image; len(seeds) == image count
    base_model: str  # file (or folder) name under models/checkpoints/
    sampler_name: str = "dpmpp_2m_sde_gpu"
    scheduler_name: str = "karras"
    disable_preview: bool = False
    # Per image, parallel to `seeds` (engine.planning.prompts): `prompt`/`negative_prompt` above are image 1's.
    prompts: tuple[str, ...] = ()  # styles applied, lines joined with ", ": what to encode
    negative_prompts: tuple[str, ...] = ()
    # The same texts as separate parts; Fooocus encodes each and concatenates the conditionings.
    prompt_parts: tuple[tuple[str, ...], ...] = ()
    negative_prompt_parts: tuple[tuple[str, ...], ...] = ()
    # The user's text with wildcards and arrays resolved, before styles: metadata's "prompt".
    resolved_prompts: tuple[str, ...] = ()
    resolved_negative_prompts: tuple[str, ...] = ()
    # Fooocus V2, per image ("" = none): the text to expand, and (filled in by the engine, with the
    # image's seed) the expansion, encoded as the last positive part and left out of the pooled output.
    expansion_sources: tuple[str, ...] = ()
    expansions: tuple[str, ...] = ()
    styles: tuple[str, ...] = ()  # styles applied to image 1 ("Random Style" resolved)
    image_styles: tuple[tuple[str, ...], ...] = ()  # the same, per image
    notes: tuple[str, ...] = ()  # things the plan could not honour, for the task record
    # Fooocus's guidance extras (engine/diffusion/guidance.py); the few-step modes force them off.
    sharpness: float = 2.0
    adaptive_cfg: float = 7.0
    adm_scaler_positive: float = 1.5
    adm_scaler_negative: float = 0.8
    adm_scaler_end: float = 0.3
    # (file under models/loras, weight), the performance mode's LoRA last; disabled and weight-0 slots dropped.
    loras: tuple[tuple[str, float], ...] = ()
    refiner_model: str | None = None  # checkpoint the sampling switches to at `refiner_switch_step`
    refiner_switch_step: int = 0  # steps run on the base model before the switch
    refiner_swap_method: RefinerSwapMethod = "joint"
    vae_name: str | None = None  # file under models/vae; None = the checkpoint's own VAE
    clip_skip: int = 2  # Fooocus's: CLIP hidden layer -clip_skip (2 = penultimate, SDXL's default)
    freeu: tuple[float, float, float, float] | None = None  # (b1, b2, s1, s2) when enabled
    black_out_nsfw: bool = False
    image_task: ImageTask | None = None  # None: text to image at width x height
    image_prompts: tuple[ImagePrompt, ...] = ()  # applied on every UNet call of the base model
    control: ControlSettings = ControlSettings()
    enhance: EnhancePlan | None = None  # Fooocus's enhance: passes over each image once it is made

    def model_setup(self) -> ModelSetup:
        return ModelSetup(
            base_model=self.base_model, refiner_model=self.refiner_model, vae_name=self.vae_name,
            loras=self.loras, freeu=self.freeu,
        )  # fmt: skip

    def batch_key(self) -> BatchKey:
        """What must be equal for two tasks' rows to share one UNet call (issue: batching on the GPU)."""
        # The switch step matters only with a refiner (it is the step count without one: plans of
        # different lengths share a batch, each row with its own schedule).
        switch = self.refiner_switch_step if self.refiner_model else 0
        return BatchKey(
            setup=self.model_setup(), width=self.width, height=self.height,
            refiner_switch_step=switch, image_task=type(self.image_task).__name__,
            image_prompts=self.image_prompts, control=self.control if self.image_prompts else None,
        )  # fmt: skip

    def prompt_for(self, index: int) -> str:
        """Image `index`'s positive text; plans built without per-image prompts use `prompt`."""
        return self.prompts[index] if index < len(self.prompts) else self.prompt

    def expansion_for(self, index: int) -> str:
        """Image `index`'s Fooocus V2 expansion, once the engine has made it ("" = none)."""
        return self.expansions[index] if index < len(self.expansions) else ""

    def negative_prompt_for(self, index: int) -> str:
        return self.negative_prompts[index] if index < len(self.negative_prompts) else self.negative_prompt


class EnhancePass(msgspec.Struct, frozen=True, kw_only=True):
    """One enhance control: find its region, then inpaint it with its own prompt and settings."""

    mask: MaskOptions  # how the region is found (a mask model, or GroundingDINO + SAM on a prompt)
    erode_or_dilate: int = 0  # enhance_inpaint_erode_or_dilate, then
    invert: bool = False  # enhance_mask_invert
    # The inpaint as a plan whose image task's image and mask are filled in when the pass runs.
    plan: GenerationPlan


class EnhancePlan(msgspec.Struct, frozen=True, kw_only=True):
    """What enhance does to each image (brief §5): an optional vary/upscale before the first or after
    the last pass, then the passes in order, each on the previous pass's output."""

    input_image: str = ""  # the enhance tab: this stored image instead of a generation
    uov_before: GenerationPlan | None = None  # image task filled in when it runs
    uov_after: GenerationPlan | None = None
    passes: tuple[EnhancePass, ...] = ()
    debug_masks: bool = False  # debugging_enhance_masks_checkbox: each pass's mask is a result too
    final_only: bool = False  # save_final_enhanced_image_only: only each image's last stage is kept
