"""The wire contract: FooocusAPI's request and record shapes as msgspec Structs.

Every request field is `X | UnsetType = UNSET` so that a preset fills only what the client did not
send (never "equals the default"). The defaults live in `engine.plan.REQUEST_DEFAULTS` and are
repeated in each field's description because Litestar's OpenAPI drops them for UNSET fields.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

Performance = Literal["Quality", "Speed", "Extreme Speed", "Lightning", "Hyper-SD"]
UovMethod = Literal[
    "Disabled", "Vary (Subtle)", "Vary (Strong)", "Upscale (1.5x)", "Upscale (2x)", "Upscale (Fast 2x)",
    "Upscale (Custom)",
]  # fmt: skip
OutpaintDirection = Literal["Left", "Right", "Top", "Bottom"]
OutputFormat = Literal["png", "jpeg", "jpg", "webp"]
ControlNetType = Literal["ImagePrompt", "FaceSwap", "PyraCanny", "CPDS"]
InpaintEngine = Literal["None", "v1", "v2.5", "v2.6"]

ImageField = Annotated[
    str | None,
    Meta(description="An image: http(s) URL, raw base64 or a data:image/...;base64 URI. '', 'None' = no image."),
]


def _d(text: str, **kw: Any) -> Meta:
    return Meta(description=text, **kw)


Unit = Annotated[float, Meta(ge=0.0, le=1.0)]


class Lora(Struct, kw_only=True):
    enabled: bool = True
    model_name: Annotated[str, Meta(max_length=255)] = "None"
    weight: Annotated[float, Meta(ge=-2.0, le=2.0)] = 0.5


class ImagePrompt(Struct, kw_only=True):
    """One image prompt. FooocusAPI's wire defaults are 0.6/0.6 for every type; Fooocus's UI uses
    (stop, weight) ImagePrompt 0.5/0.6, FaceSwap 0.9/0.75, PyraCanny 0.5/1.0, CPDS 0.5/1.0."""

    cn_img: ImageField = None
    cn_stop: Annotated[
        float,
        _d("Stop at: active while the timestep t >= 999 * (1 - cn_stop); 1 = every step, 0 = none.", ge=0.0, le=1.0),
    ] = 0.6
    cn_weight: Annotated[
        float, _d("Weight; 0 skips a PyraCanny/CPDS control (an IP-Adapter's tokens still join).", ge=0.0, le=2.0)
    ] = 0.6
    cn_type: Annotated[
        ControlNetType,
        _d("ImagePrompt and FaceSwap: IP-Adapter plus (face); PyraCanny and CPDS: Control-LoRAs on the base model."),
    ] = "ImagePrompt"


class EnhanceCtrlNets(Struct, kw_only=True):
    enhance_enabled: bool = False
    enhance_mask_dino_prompt: str = ""
    enhance_prompt: str = ""
    enhance_negative_prompt: str = ""
    enhance_mask_model: Literal[
        "u2net", "u2netp", "u2net_human_seg", "u2net_cloth_seg", "silueta", "isnet-general-use", "isnet-anime",
        "sam",
    ] = "sam"  # fmt: skip
    enhance_mask_cloth_category: Literal["full", "upper", "lower"] = "full"
    enhance_mask_sam_model: Literal["vit_b", "vit_l", "vit_h"] = "vit_b"
    enhance_mask_text_threshold: Unit = 0.25
    enhance_mask_box_threshold: Unit = 0.3
    enhance_mask_sam_max_detections: Annotated[int, Meta(ge=0, le=10)] = 0
    enhance_inpaint_disable_initial_latent: bool = False
    enhance_inpaint_engine: InpaintEngine = "v2.6"
    enhance_inpaint_strength: Unit = 1.0
    enhance_inpaint_respective_field: Unit = 0.618
    enhance_inpaint_erode_or_dilate: Annotated[int, Meta(ge=-64, le=64)] = 0
    enhance_mask_invert: bool = False


class GenerateRequest(Struct, kw_only=True):
    """POST /v1/engine/generate/ — FooocusAPI's CommonRequest, every field optional."""

    prompt: (
        Annotated[str, _d("Multi-line: line 1 is the main prompt. Default: preset's.", max_length=20000)] | UnsetType
    ) = UNSET
    negative_prompt: Annotated[str, Meta(max_length=20000)] | UnsetType = UNSET
    style_selections: Annotated[list[str], _d("Style names (GET /v1/engines/styles).", max_length=300)] | UnsetType = (
        UNSET
    )
    performance_selection: Annotated[Performance, _d("Default: Speed (30 steps).")] | UnsetType = UNSET
    aspect_ratios_selection: Annotated[str, _d("`W*H`, e.g. `1152*896` (default).", max_length=32)] | UnsetType = UNSET
    image_number: Annotated[int, _d("1..32, default 1.", ge=1, le=32)] | UnsetType = UNSET
    output_format: Annotated[OutputFormat, _d("png (default), jpeg or webp.")] | UnsetType = UNSET
    image_seed: Annotated[int, _d("-1 (default) = random; image i uses seed+i.")] | UnsetType = UNSET
    read_wildcards_in_order: bool | UnsetType = UNSET
    sharpness: Annotated[float, _d("0..30, default 2.", ge=0, le=30)] | UnsetType = UNSET
    guidance_scale: Annotated[float, _d("1..30, default 4 (preset cfg).", ge=1, le=30)] | UnsetType = UNSET
    base_model_name: Annotated[str, _d("Checkpoint file in models/checkpoints.", max_length=255)] | UnsetType = UNSET
    refiner_model_name: Annotated[str, Meta(max_length=255)] | UnsetType = UNSET
    refiner_switch: Annotated[float, Meta(ge=0.1, le=1.0)] | UnsetType = UNSET
    loras: Annotated[list[Lora], _d("Up to 5 LoRA slots.", max_length=5)] | UnsetType = UNSET
    input_image_checkbox: bool | UnsetType = UNSET
    current_tab: Annotated[str, _d("Derived by the server; accepted for compatibility.", max_length=16)] | UnsetType = (
        UNSET
    )
    uov_method: UovMethod | UnsetType = UNSET
    uov_input_image: ImageField | UnsetType = UNSET
    outpaint_selections: Annotated[list[OutpaintDirection], Meta(max_length=4)] | UnsetType = UNSET
    inpaint_input_image: ImageField | UnsetType = UNSET
    inpaint_additional_prompt: Annotated[str, Meta(max_length=20000)] | UnsetType = UNSET
    inpaint_mask_image_upload: ImageField | UnsetType = UNSET
    disable_preview: bool | UnsetType = UNSET
    disable_intermediate_results: bool | UnsetType = UNSET
    disable_seed_increment: bool | UnsetType = UNSET
    black_out_nsfw: bool | UnsetType = UNSET
    adm_scaler_positive: Annotated[float, Meta(ge=0.0, le=3.0)] | UnsetType = UNSET
    adm_scaler_negative: Annotated[float, Meta(ge=0.0, le=3.0)] | UnsetType = UNSET
    adm_scaler_end: Unit | UnsetType = UNSET
    adaptive_cfg: Annotated[float, Meta(ge=1.0, le=30.0)] | UnsetType = UNSET
    clip_skip: Annotated[int, Meta(ge=1, le=12)] | UnsetType = UNSET
    sampler_name: Annotated[str, _d("Fooocus sampler name, default dpmpp_2m_sde_gpu.", max_length=64)] | UnsetType = (
        UNSET
    )
    scheduler_name: Annotated[str, _d("Fooocus scheduler name, default karras.", max_length=64)] | UnsetType = UNSET
    vae_name: Annotated[str, Meta(max_length=255)] | UnsetType = UNSET
    overwrite_step: Annotated[int, _d("-1 = performance's steps.", ge=-1, le=200)] | UnsetType = UNSET
    overwrite_switch: Annotated[int, Meta(ge=-1, le=200)] | UnsetType = UNSET
    overwrite_width: Annotated[int, Meta(ge=-1, le=2048)] | UnsetType = UNSET
    overwrite_height: Annotated[int, Meta(ge=-1, le=2048)] | UnsetType = UNSET
    overwrite_vary_strength: Annotated[float, Meta(ge=-1.0, le=1.0)] | UnsetType = UNSET
    overwrite_upscale_strength: Annotated[float, Meta(ge=-1.0, le=1.0)] | UnsetType = UNSET
    mixing_image_prompt_and_vary_upscale: bool | UnsetType = UNSET
    mixing_image_prompt_and_inpaint: bool | UnsetType = UNSET
    debugging_cn_preprocessor: (
        Annotated[bool, _d("Return each image prompt's preprocessed input instead of generating; default false.")]
        | UnsetType
    ) = UNSET
    skipping_cn_preprocessor: (
        Annotated[bool, _d("Feed image prompts as sent (no Canny/CPDS, no face crop); default false.")] | UnsetType
    ) = UNSET
    canny_low_threshold: Annotated[int, _d("PyraCanny's low threshold, default 64.", ge=1, le=255)] | UnsetType = UNSET
    canny_high_threshold: Annotated[int, _d("PyraCanny's high threshold, default 128.", ge=1, le=255)] | UnsetType = (
        UNSET
    )
    refiner_swap_method: Literal["joint", "separate", "vae"] | UnsetType = UNSET
    controlnet_softness: (
        Annotated[float, _d("ControlNet residuals scaled by 1 - softness (finest) .. 1 (mid); default 0.25.",
                            ge=0.0, le=1.0)] | UnsetType
    ) = UNSET  # fmt: skip
    freeu_enabled: bool | UnsetType = UNSET
    freeu_b1: Annotated[float, _d("0..2 (Fooocus's slider), default 1.01.", ge=0.0, le=2.0)] | UnsetType = UNSET
    freeu_b2: Annotated[float, _d("0..2, default 1.02.", ge=0.0, le=2.0)] | UnsetType = UNSET
    freeu_s1: Annotated[float, _d("0..4, default 0.99.", ge=0.0, le=4.0)] | UnsetType = UNSET
    freeu_s2: Annotated[float, _d("0..4, default 0.95.", ge=0.0, le=4.0)] | UnsetType = UNSET
    debugging_inpaint_preprocessor: bool | UnsetType = UNSET
    inpaint_disable_initial_latent: bool | UnsetType = UNSET
    inpaint_engine: InpaintEngine | UnsetType = UNSET
    inpaint_strength: Unit | UnsetType = UNSET
    inpaint_respective_field: Unit | UnsetType = UNSET
    inpaint_advanced_masking_checkbox: bool | UnsetType = UNSET
    invert_mask_checkbox: bool | UnsetType = UNSET
    inpaint_erode_or_dilate: Annotated[int, Meta(ge=-64, le=64)] | UnsetType = UNSET
    save_final_enhanced_image_only: bool | UnsetType = UNSET
    save_metadata_to_images: bool | UnsetType = UNSET
    metadata_scheme: Literal["fooocus", "a1111"] | UnsetType = UNSET
    controlnet_image: Annotated[list[ImagePrompt], Meta(max_length=4)] | UnsetType = UNSET
    debugging_dino: bool | UnsetType = UNSET
    dino_erode_or_dilate: Annotated[int, Meta(ge=-64, le=64)] | UnsetType = UNSET
    debugging_enhance_masks_checkbox: bool | UnsetType = UNSET
    enhance_input_image: ImageField | UnsetType = UNSET
    enhance_checkbox: bool | UnsetType = UNSET
    enhance_uov_method: UovMethod | UnsetType = UNSET
    enhance_uov_processing_order: Literal["Before First Enhancement", "After Last Enhancement"] | UnsetType = UNSET
    enhance_uov_prompt_type: Literal["Original Prompts", "Last Filled Enhancement Prompts"] | UnsetType = UNSET
    enhance_ctrls: Annotated[list[EnhanceCtrlNets], Meta(max_length=3)] | UnsetType = UNSET
    generate_image_grid: bool | UnsetType = UNSET
    save_name: Annotated[str, Meta(max_length=128, pattern=r"^[A-Za-z0-9_\-. ]*$")] | None | UnsetType = UNSET
    outpaint_distance: (
        Annotated[
            list[Annotated[int, Meta(ge=0, le=2048)]],
            _d("[left, top, right, bottom] pixels.", min_length=4, max_length=4),
        ]
        | UnsetType
    ) = UNSET
    upscale_multiple: Annotated[float, Meta(ge=1.0, le=5.0)] | UnsetType = UNSET
    preset: Annotated[str, _d("Per-request preset; 'initial' = the server's.", max_length=64)] | UnsetType = UNSET
    stream_output: bool | UnsetType = UNSET
    require_base64: bool | UnsetType = UNSET
    async_process: bool | UnsetType = UNSET
    webhook_url: (
        Annotated[
            str,
            _d(
                "http(s) URL with a host; the final record is POSTed there, signed when the server has a "
                "webhook secret. Loopback and private hosts need --allow-private-webhooks.",
                max_length=2048,
            ),
        ]
        | None
        | UnsetType
    ) = UNSET


def sent_fields(request: Struct) -> dict[str, Any]:
    """The fields the client actually sent, as plain JSON-able values."""
    return {
        name: msgspec.to_builtins(value)
        for name in request.__struct_fields__
        if (value := getattr(request, name)) is not UNSET
    }


class TaskRecord(Struct, kw_only=True):
    """A task as FooocusAPI shows it (plus `error` for failed tasks)."""

    id: int
    task_id: str
    req_params: dict[str, Any]
    in_queue_mills: int | None
    start_mills: int | None
    finish_mills: int | None
    task_status: str | None
    progress: float | None
    webhook_url: str | None
    result: list[str]
    preview: str | None = None
    error: dict[str, str] | None = None
    notes: list[str] = []
    wire: str = ""  # the API that admitted the task: "" FooocusAPI, "fooocus-api/<route>", "openai"


class TasksResponse(Struct, kw_only=True):
    history: list[TaskRecord]
    current: list[TaskRecord]
    pending: list[TaskRecord]


class StreamMessage(Struct, kw_only=True):
    progress: int
    preview: str | None
    message: str
    images: list[str]


class ControlResponse(Struct):
    message: str
