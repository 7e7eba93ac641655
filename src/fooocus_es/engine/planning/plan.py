"""Request -> resolved parameters -> GenerationPlan. Pure rules: no torch.

The only I/O is `build_plan` reading style and wildcard files (planning.styles, planning.wildcards)
and checking whether the Fooocus V2 expansion folder is installed.

Resolution order, each layer only for fields the layer above did not set:
    sent by the client  >  per-request preset  >  the server's preset  >  FooocusAPI defaults
then the performance mode's forced overrides, as Fooocus applies them.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from fooocus_es.engine.planning import aspect, performance, prompts
from fooocus_es.engine.planning.demo_names import DEMO_CHECKPOINT
from fooocus_es.engine.planning.enhance import enhance_plan
from fooocus_es.engine.planning.expansion_names import expansion_folder
from fooocus_es.engine.planning.image_prompt_files import IMAGE_PROMPT_DOWNLOADS, image_prompt_files
from fooocus_es.engine.planning.plan_types import (
    ControlSettings,
    GenerationPlan,
    ImagePrompt,
    ImageTask,
    InpaintTask,
    UpscaleTask,
    VaryTask,
)
from fooocus_es.engine.planning.sampler_names import SAMPLER_NAMES, SCHEDULER_NAMES, unsupported_reason
from fooocus_es.engine.planning.styles import Style, load_styles, style_names
from fooocus_es.engine.planning.tool_files import check_enhance_files
from fooocus_es.engine.planning.wildcards import WildcardDir

MAX_SEED: Final = 2**63 - 1
NO_PRESET: Final = "initial"

_EMPTY_LORA: Final = {"enabled": True, "model_name": "None", "weight": 1.0}

# FooocusAPI's CommonRequest defaults (fooocus-facts §1.5), before any preset.
REQUEST_DEFAULTS: Final[dict[str, Any]] = {
    "prompt": "",
    "negative_prompt": "",
    "style_selections": ["Fooocus V2", "Fooocus Enhance", "Fooocus Sharp"],
    "performance_selection": "Speed",
    "aspect_ratios_selection": "1152*896",
    "image_number": 1,
    "output_format": "png",
    "image_seed": -1,
    "read_wildcards_in_order": False,
    "sharpness": 2.0,
    "guidance_scale": 4.0,
    "base_model_name": "juggernautXL_v8Rundiffusion.safetensors",
    "refiner_model_name": "None",
    "refiner_switch": 0.5,
    "loras": [],
    "input_image_checkbox": True,
    "current_tab": "uov",
    "uov_method": "Disabled",
    "uov_input_image": "",
    "outpaint_selections": [],
    "inpaint_input_image": "",
    "inpaint_additional_prompt": "",
    "inpaint_mask_image_upload": "",
    "disable_preview": False,
    "disable_intermediate_results": False,
    "disable_seed_increment": False,
    "black_out_nsfw": False,
    "adm_scaler_positive": 1.5,
    "adm_scaler_negative": 0.8,
    "adm_scaler_end": 0.3,
    "adaptive_cfg": 7.0,
    "clip_skip": 2,
    "sampler_name": "dpmpp_2m_sde_gpu",
    "scheduler_name": "karras",
    "vae_name": "Default (model)",
    "overwrite_step": -1,
    "overwrite_switch": -1,
    "overwrite_width": -1,
    "overwrite_height": -1,
    "overwrite_vary_strength": -1.0,
    "overwrite_upscale_strength": -1.0,
    "mixing_image_prompt_and_vary_upscale": False,
    "mixing_image_prompt_and_inpaint": False,
    "debugging_cn_preprocessor": False,
    "skipping_cn_preprocessor": False,
    "canny_low_threshold": 64,
    "canny_high_threshold": 128,
    "refiner_swap_method": "joint",
    "controlnet_softness": 0.25,
    "freeu_enabled": False,
    "freeu_b1": 1.01,
    "freeu_b2": 1.02,
    "freeu_s1": 0.99,
    "freeu_s2": 0.95,
    "debugging_inpaint_preprocessor": False,
    "inpaint_disable_initial_latent": False,
    "inpaint_engine": "v2.6",
    "inpaint_strength": 1.0,
    "inpaint_respective_field": 0.618,
    "inpaint_advanced_masking_checkbox": False,
    "invert_mask_checkbox": False,
    "inpaint_erode_or_dilate": 0,
    "save_final_enhanced_image_only": False,
    "save_metadata_to_images": True,
    "metadata_scheme": "fooocus",
    "controlnet_image": [],
    "debugging_dino": False,
    "dino_erode_or_dilate": 0,
    "debugging_enhance_masks_checkbox": False,
    "enhance_input_image": "",
    "enhance_checkbox": False,
    "enhance_uov_method": "Disabled",
    "enhance_uov_processing_order": "Before First Enhancement",
    "enhance_uov_prompt_type": "Original Prompts",
    "enhance_ctrls": [],
    "generate_image_grid": False,
    "save_name": None,
    "outpaint_distance": [0, 0, 0, 0],
    "upscale_multiple": 1.0,
    "preset": NO_PRESET,
    "stream_output": False,
    "require_base64": False,
    "async_process": False,
    "webhook_url": "",
}
MAX_LORAS: Final = 5
NO_MODEL_NAMES: Final = frozenset({"None", "none", ""})
DEFAULT_VAE_NAMES: Final = frozenset({"Default (model)", "None", ""})


class ParamError(ValueError):
    """A request value that passed type checks but names something that does not exist."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def merge_layers(sent: dict[str, Any], *presets: dict[str, Any]) -> dict[str, Any]:
    """Defaults, then presets (lowest priority first), then the sent fields."""
    params = dict(REQUEST_DEFAULTS)
    for layer in presets:
        params.update(layer)
    params.update(sent)
    return params


def finalize(params: dict[str, Any], *, rng: random.Random | None = None) -> dict[str, Any]:
    """Apply Fooocus's derived rules; the result is what the task log records as req_params."""
    params = dict(params)
    params.update(performance.forced_overrides(params["performance_selection"]))
    if params["output_format"] == "jpg":
        params["output_format"] = "jpeg"
    # Clients copy Fooocus's UI label ("1152×896"); the record keeps the canonical W*H.
    params["aspect_ratios_selection"] = params["aspect_ratios_selection"].replace("×", "*")
    params["input_image_checkbox"] = True
    seed = params["image_seed"]
    if not 0 <= seed <= MAX_SEED:
        params["image_seed"] = (rng or random.SystemRandom()).randint(0, MAX_SEED)
    loras = [lora for lora in params["loras"]][:MAX_LORAS]
    params["loras"] = loras + [dict(_EMPTY_LORA)] * (MAX_LORAS - len(loras))
    params["current_tab"] = current_tab(params)
    return params


def current_tab(params: dict[str, Any]) -> str:
    """FooocusAPI derives the tab from which images were sent: enhance > image prompt > uov > inpaint."""
    if params.get("enhance_input_image"):
        return "enhance"
    if any(item.get("cn_img") for item in params.get("controlnet_image") or []):
        return "ip"
    if params.get("uov_input_image"):
        return "uov"
    if params.get("inpaint_input_image"):
        return "inpaint"
    return params.get("current_tab", "uov")


def validate_names(
    params: dict[str, Any],
    *,
    checkpoints: set[str],
    downloadable: set[str],
    sent: dict[str, Any] | None = None,
    styles: Iterable[str] | None = None,
    loras: set[str] | None = None,
    vaes: set[str] | None = None,
    safety_checker: bool = True,
    inpaint_files: set[str] | None = None,
    image_prompt_files: set[str] | None = None,
    tool_files: frozenset[str] | None = None,
) -> None:
    """Names the type system cannot check: styles, samplers, sizes, model files.

    `loras` / `vaes` are the files on disk (None: not checked); `downloadable` holds names of any
    kind the server knows a download URL for.

    `params` are the finalized ones; `sent` names are checked too, since a performance mode's
    forced sampler would otherwise hide a misspelt one the client sent.
    """
    for field, legal in (("sampler_name", SAMPLER_NAMES), ("scheduler_name", SCHEDULER_NAMES)):
        if sent and field in sent and sent[field] not in legal:
            raise ParamError(field, f"unknown name {sent[field]!r}; valid: {', '.join(legal)}")
    legal_styles = set(styles if styles is not None else style_names())  # with the data dir's styles/
    for index, name in enumerate(params["style_selections"]):
        if name not in legal_styles:
            raise ParamError(
                f"style_selections[{index}]",
                f"unknown style {name!r}; see GET /v1/engines/styles for the {len(legal_styles)} valid names",
            )
    if params["sampler_name"] not in SAMPLER_NAMES:
        raise ParamError(
            "sampler_name", f"unknown sampler {params['sampler_name']!r}; valid: {', '.join(SAMPLER_NAMES)}"
        )
    if params["scheduler_name"] not in SCHEDULER_NAMES:
        raise ParamError(
            "scheduler_name", f"unknown scheduler {params['scheduler_name']!r}; valid: {', '.join(SCHEDULER_NAMES)}"
        )
    reason = unsupported_reason(params["sampler_name"], params["scheduler_name"])
    if reason:
        raise ParamError("sampler_name", reason)
    try:
        aspect.resolve_size(params["aspect_ratios_selection"], params["overwrite_width"], params["overwrite_height"])
    except aspect.AspectRatioError as exc:
        raise ParamError("aspect_ratios_selection", str(exc)) from exc
    model = params["base_model_name"]
    if model not in checkpoints and model not in downloadable:
        listed = ", ".join(sorted(checkpoints)) or "none installed"
        raise ParamError("base_model_name", f"unknown model {model!r}; available: {listed}")
    refiner = params["refiner_model_name"]
    if refiner not in NO_MODEL_NAMES and refiner not in checkpoints and refiner not in downloadable:
        listed = ", ".join(sorted(checkpoints)) or "none installed"
        raise ParamError("refiner_model_name", f"unknown model {refiner!r}; available: None, {listed}")
    if loras is not None:
        for index, lora in enumerate(params["loras"]):
            name = lora["model_name"]
            if lora.get("enabled", True) and name not in NO_MODEL_NAMES and name not in loras | downloadable:
                listed = ", ".join(sorted(loras)) or "none installed"
                raise ParamError(f"loras[{index}].model_name", f"unknown LoRA {name!r}; available: {listed}")
    vae = params["vae_name"]
    if vaes is not None and vae not in DEFAULT_VAE_NAMES and vae not in vaes | downloadable:
        listed = ", ".join(sorted(vaes)) or "none installed"
        raise ParamError("vae_name", f"unknown VAE {vae!r}; available: Default (model), {listed}")
    task = image_task(params)
    demo = params["base_model_name"] == DEMO_CHECKPOINT  # the demo model's tiny patch files are generated
    if isinstance(task, InpaintTask) and inpaint_files is not None and not demo:
        needed = INPAINT_ENGINE_FILES.get(task.inpaint_engine, ())
        missing = [name for name in needed if name not in inpaint_files]
        if missing:
            raise ParamError(
                "inpaint_engine",
                f"inpaint engine {task.inpaint_engine} needs Fooocus's patch files in models/inpaint/, missing: "
                f"{', '.join(missing)} (from https://huggingface.co/lllyasviel/fooocus_inpaint); "
                'or send inpaint_engine "None" to inpaint with the base model alone',
            )
    if image_prompt_files is not None and not demo:
        _check_image_prompt_files(params, image_prompt_files)
    if tool_files is not None and not demo:
        refused = check_enhance_files(params, tool_files)
        if refused is not None:
            raise ParamError(*refused)
    if params["black_out_nsfw"] and not safety_checker:
        raise ParamError(
            "black_out_nsfw",
            "no safety checker is installed (models/safety_checker/ with config.json, model.safetensors and "
            "preprocessor_config.json), so NSFW images cannot be blacked out; install one or send false",
        )


def _check_image_prompt_files(params: dict[str, Any], on_disk: set[str]) -> None:
    """Each applied image prompt's model files must be installed (when the server does not download them)."""
    if not image_prompts(params):
        return
    skip = bool(params["skipping_cn_preprocessor"])
    for index, item in enumerate(params.get("controlnet_image") or []):
        if not item.get("cn_img"):
            continue
        cn_type = item.get("cn_type") or "ImagePrompt"
        missing = [name for name in image_prompt_files(cn_type, skip_preprocessor=skip) if name not in on_disk]
        if missing:
            where = "; ".join(
                f"{name} in models/{folder}/ (from {url})"
                for name in missing
                for folder, url in (IMAGE_PROMPT_DOWNLOADS[name],)
            )
            raise ParamError(
                f"controlnet_image[{index}].cn_type",
                f"{cn_type} needs model files that are not installed and this server does not download them: {where}",
            )


def image_seeds(params: dict[str, Any]) -> tuple[int, ...]:
    seed, count = params["image_seed"], params["image_number"]
    if params["disable_seed_increment"]:
        return (seed,) * count
    return tuple((seed + i) % (MAX_SEED + 1) for i in range(count))


def build_plan(
    task_id: str,
    params: dict[str, Any],
    *,
    data_dir: Path | None = None,
    styles: Mapping[str, Style] | None = None,
    models_dir: Path | None = None,
) -> GenerationPlan:
    """The plan for finalized `params`; style and wildcard files come from `data_dir` (and the bundled ones).

    `styles` lets a caller that keeps a `StyleBook` skip re-reading the style files. `models_dir`
    (default `data_dir/models`) is where the Fooocus V2 expansion folder is looked for.
    """
    width, height = aspect.resolve_size(
        params["aspect_ratios_selection"], params["overwrite_width"], params["overwrite_height"]
    )
    seeds = image_seeds(params)
    if params.get("enhance_input_image"):  # the enhance tab: one image, the input itself (no generation)
        seeds = seeds[:1]
    task = image_task(params)
    uov = isinstance(task, VaryTask | UpscaleTask)
    steps = performance.steps_for(params["performance_selection"], params["overwrite_step"], uov=uov)
    refiner = refiner_model(params)
    notes: tuple[str, ...] = ()
    styles = styles if styles is not None else load_styles(data_dir)
    if refiner and task is not None:
        notes += (f"refiner {refiner!r} not applied: image-to-image tasks run on the base model only",)
        refiner = None
    texts = prompts.build_prompts(
        _prompt_with_inpaint_line(params),
        params["negative_prompt"],
        params["style_selections"],
        seeds,
        styles=styles,
        wildcards=WildcardDir(data_dir),
        read_wildcards_in_order=bool(params["read_wildcards_in_order"]),
        expand=expansion_installed(params, models_dir or (data_dir / "models" if data_dir else None)),
    )
    images = texts.images
    return GenerationPlan(
        task_id=task_id,
        prompt=images[0].prompt if images else "",
        negative_prompt=images[0].negative_prompt if images else "",
        width=width,
        height=height,
        steps=steps,
        guidance_scale=float(params["guidance_scale"]),
        seeds=seeds,
        base_model=params["base_model_name"],
        sampler_name=params["sampler_name"],
        scheduler_name=params["scheduler_name"],
        disable_preview=bool(params["disable_preview"]),
        prompts=tuple(image.prompt for image in images),
        negative_prompts=tuple(image.negative_prompt for image in images),
        prompt_parts=tuple(image.positive_parts for image in images),
        negative_prompt_parts=tuple(image.negative_parts for image in images),
        resolved_prompts=tuple(image.user_prompt for image in images),
        resolved_negative_prompts=tuple(image.user_negative_prompt for image in images),
        expansion_sources=tuple(image.expansion_source for image in images),
        styles=images[0].styles if images else (),
        image_styles=tuple(image.styles for image in images),
        notes=texts.notes + notes,
        sharpness=float(params["sharpness"]),
        adaptive_cfg=float(params["adaptive_cfg"]),
        adm_scaler_positive=float(params["adm_scaler_positive"]),
        adm_scaler_negative=float(params["adm_scaler_negative"]),
        adm_scaler_end=float(params["adm_scaler_end"]),
        loras=task_loras(params),
        refiner_model=refiner,
        refiner_switch_step=refiner_switch_step(params, steps) if refiner else steps,
        refiner_swap_method=params["refiner_swap_method"],
        vae_name=None if params["vae_name"] in DEFAULT_VAE_NAMES else params["vae_name"],
        clip_skip=int(params["clip_skip"]),
        freeu=_freeu(params),
        black_out_nsfw=bool(params["black_out_nsfw"]),
        image_task=task,
        image_prompts=image_prompts(params),
        control=control_settings(params),
        enhance=enhance_plan(
            params, lambda sub: build_plan(task_id, sub, data_dir=data_dir, styles=styles, models_dir=models_dir)
        ),
    )


def expansion_installed(params: dict[str, Any], models_dir: Path | None) -> bool:
    """Whether Fooocus V2 can run: the user installed the expansion folder, or the demo model's is generated."""
    if params["base_model_name"] == DEMO_CHECKPOINT:
        return True
    return models_dir is not None and expansion_folder(models_dir, demo=False).is_dir()


VARY_STRENGTH: Final = {"Vary (Subtle)": 0.5, "Vary (Strong)": 0.85}
UPSCALE_STRENGTH: Final = 0.382
# Fooocus's inpaint engines: the head plus one patch file each, in models/inpaint/.
INPAINT_DIR: Final = "inpaint"
INPAINT_ENGINE_FILES: Final[dict[str, tuple[str, ...]]] = {
    "v1": ("fooocus_inpaint_head.pth", "inpaint.fooocus.patch"),
    "v2.5": ("fooocus_inpaint_head.pth", "inpaint_v25.fooocus.patch"),
    "v2.6": ("fooocus_inpaint_head.pth", "inpaint_v26.fooocus.patch"),
}
UPSCALE_FACTORS: Final = {"Upscale (1.5x)": 1.5, "Upscale (2x)": 2.0, "Upscale (Fast 2x)": 2.0}


def image_task(params: dict[str, Any]) -> ImageTask | None:
    """The image-to-image work of finalized params, chosen by current_tab and the mixing flags (§1.5)."""
    tab = params["current_tab"]
    uov_tab = tab == "uov" or (tab == "ip" and params["mixing_image_prompt_and_vary_upscale"])
    inpaint_tab = tab == "inpaint" or (tab == "ip" and params["mixing_image_prompt_and_inpaint"])
    method = params["uov_method"]
    if uov_tab and params["uov_input_image"] and method != "Disabled":
        return _uov_task(params, method)
    if inpaint_tab and params["inpaint_input_image"]:
        return _inpaint_task(params)
    return None


def image_prompts(params: dict[str, Any]) -> tuple[ImagePrompt, ...]:
    """The image prompts that apply: items with an image, on the image prompt tab or with a mixing flag.

    Fooocus adds its ControlNet goal when the tab is "ip" or either mixing flag is set, whatever
    the tab (so an upscale with `mixing_image_prompt_and_vary_upscale` applies them too). The tab
    is "ip" here when any slot has an image, where FooocusAPI looks at slot 1 only (current_tab).
    """
    tab = params["current_tab"]
    if not (tab == "ip" or params["mixing_image_prompt_and_vary_upscale"] or params["mixing_image_prompt_and_inpaint"]):
        return ()
    return tuple(
        ImagePrompt(
            cn_type=item.get("cn_type") or "ImagePrompt",
            image=str(item["cn_img"]),
            stop=float(item.get("cn_stop", 0.6)),
            weight=float(item.get("cn_weight", 0.6)),
        )
        for item in params.get("controlnet_image") or []
        if item.get("cn_img")
    )


def control_settings(params: dict[str, Any]) -> ControlSettings:
    return ControlSettings(
        softness=float(params["controlnet_softness"]),
        canny_low=int(params["canny_low_threshold"]),
        canny_high=int(params["canny_high_threshold"]),
        skip_preprocessor=bool(params["skipping_cn_preprocessor"]),
        debug_preprocessor=bool(params["debugging_cn_preprocessor"]),
    )


def _uov_task(params: dict[str, Any], method: str) -> VaryTask | UpscaleTask:
    if method in VARY_STRENGTH:
        overwrite = float(params["overwrite_vary_strength"])
        denoise = overwrite if overwrite > 0 else VARY_STRENGTH[method]
        return VaryTask(image=params["uov_input_image"], denoise=denoise)
    overwrite = float(params["overwrite_upscale_strength"])
    # FooocusAPI sends Custom as "Upscale (Nx)" with N clamped to 1..5.
    factor = UPSCALE_FACTORS.get(method, min(5.0, max(1.0, float(params["upscale_multiple"]))))
    return UpscaleTask(
        image=params["uov_input_image"],
        method=method,
        denoise=overwrite if overwrite > 0 else UPSCALE_STRENGTH,
        upscale_factor=factor,
        fast_upscale=method == "Upscale (Fast 2x)",
    )


def _inpaint_task(params: dict[str, Any]) -> InpaintTask:
    outpaint = tuple(params["outpaint_selections"] or ())
    # Outpainting forces the whole area at full strength (Fooocus's apply_outpaint).
    forced = bool(outpaint)
    distance = tuple(int(v) for v in (params["outpaint_distance"] or (0, 0, 0, 0)))
    return InpaintTask(
        image=params["inpaint_input_image"],
        mask=params["inpaint_mask_image_upload"] or None,
        denoise=1.0 if forced else float(params["inpaint_strength"]),
        respective_field=1.0 if forced else float(params["inpaint_respective_field"]),
        invert_mask=bool(params["invert_mask_checkbox"]),
        erode_or_dilate=int(params["inpaint_erode_or_dilate"]),
        outpaint=outpaint,
        outpaint_distance=(distance + (0, 0, 0, 0))[:4],  # type: ignore[arg-type]
        disable_initial_latent=bool(params["inpaint_disable_initial_latent"]),
        inpaint_engine=str(params["inpaint_engine"]),
        debug_mask=bool(params["debugging_inpaint_preprocessor"]),
    )


def task_loras(params: dict[str, Any]) -> tuple[tuple[str, float], ...]:
    """Enabled, named, non-zero LoRA slots, then the performance mode's LoRA (Fooocus appends it)."""
    loras = [
        (str(lora["model_name"]), float(lora["weight"]))
        for lora in params["loras"]
        if lora.get("enabled", True) and lora["model_name"] not in NO_MODEL_NAMES and float(lora["weight"]) != 0.0
    ]
    extra = performance.performance_lora(params["performance_selection"])
    if extra is not None:
        loras.append((performance.lora_file_for_model(extra[0], params["base_model_name"]), extra[1]))
    return tuple(loras)


def refiner_model(params: dict[str, Any]) -> str | None:
    """The refiner checkpoint, or None; the base model named again as its refiner would change nothing."""
    name = params["refiner_model_name"]
    if name in NO_MODEL_NAMES or name == params["base_model_name"]:
        return None
    return str(name)


def refiner_switch_step(params: dict[str, Any], steps: int) -> int:
    """Fooocus: round(steps * refiner_switch), or overwrite_switch when positive; within 1..steps."""
    overwrite = params["overwrite_switch"]
    switch = int(overwrite) if overwrite > 0 else int(round(steps * float(params["refiner_switch"])))
    return max(1, min(steps, switch))


def _freeu(params: dict[str, Any]) -> tuple[float, float, float, float] | None:
    if not params["freeu_enabled"]:
        return None
    return tuple(float(params[key]) for key in ("freeu_b1", "freeu_b2", "freeu_s1", "freeu_s2"))  # type: ignore[return-value]


def _prompt_with_inpaint_line(params: dict[str, Any]) -> str:
    """Fooocus puts `inpaint_additional_prompt` in front of the prompt, as its own line, when inpainting."""
    extra = params.get("inpaint_additional_prompt") or ""
    inpainting = params.get("current_tab") == "inpaint" or (
        params.get("current_tab") == "ip" and params.get("mixing_image_prompt_and_inpaint")
    )
    if not (extra and inpainting and params.get("inpaint_input_image")):
        return params["prompt"]
    return f"{extra}\n{params['prompt']}" if params["prompt"] else extra
