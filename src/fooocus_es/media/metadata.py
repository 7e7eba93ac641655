"""Generation parameters written into output files (fooocus JSON or A1111 text), fooocus-facts §3.10."""

from __future__ import annotations

import json
from typing import Any

from fooocus_es import __version__
from fooocus_es.engine.planning.plan_types import GenerationPlan

VERSION = f"fooocus-es v{__version__}"


def fooocus_parameters(
    params: dict[str, Any], plan: GenerationPlan, seed: int, index: int = 0, expansion: str = ""
) -> dict[str, Any]:
    """`expansion`: the image's Fooocus V2 text, which Fooocus lists last in full_prompt."""
    loras = [
        f"{lora['model_name']} : {lora['weight']}"
        for lora in params.get("loras", [])
        if lora.get("enabled") and lora.get("model_name") not in (None, "", "None")
    ]
    has = index < len(plan.prompts)  # per-image texts: wildcards, arrays and Random Style differ per image
    return {
        "prompt": plan.resolved_prompts[index] if has else params["prompt"],
        "negative_prompt": plan.resolved_negative_prompts[index] if has else params["negative_prompt"],
        "full_prompt": [*(plan.prompt_parts[index] if has else [plan.prompt]), *([expansion] if expansion else [])],
        "full_negative_prompt": list(plan.negative_prompt_parts[index]) if has else [plan.negative_prompt],
        "prompt_expansion": expansion,
        "styles": list(plan.image_styles[index]) if has else params["style_selections"],
        "performance": params["performance_selection"],
        "steps": plan.steps,
        "resolution": f"({plan.width}, {plan.height})",
        "guidance_scale": plan.guidance_scale,
        "sharpness": params["sharpness"],
        "adm_guidance": str((params["adm_scaler_positive"], params["adm_scaler_negative"], params["adm_scaler_end"])),
        "base_model": plan.base_model,
        "refiner_model": params["refiner_model_name"],
        "sampler": plan.sampler_name,
        "scheduler": plan.scheduler_name,
        "vae": params["vae_name"],
        "seed": str(seed),
        "lora_combined": loras,
        "metadata_scheme": "fooocus",
        "version": VERSION,
    }


def a1111_parameters(
    params: dict[str, Any], plan: GenerationPlan, seed: int, index: int = 0, expansion: str = ""
) -> str:
    fields = {
        "Steps": plan.steps,
        "Sampler": plan.sampler_name,
        "Scheduler": plan.scheduler_name,
        "CFG scale": plan.guidance_scale,
        "Seed": seed,
        "Size": f"{plan.width}x{plan.height}",
        "Model": plan.base_model.rsplit(".", 1)[0],
        "Sharpness": params["sharpness"],
        "Performance": params["performance_selection"],
        "Version": VERSION,
    }
    tail = ", ".join(f"{key}: {value}" for key, value in fields.items())
    prompt = ", ".join(part for part in (plan.prompt_for(index), expansion) if part)
    return f"{prompt}\nNegative prompt: {plan.negative_prompt_for(index)}\n{tail}"


def parameters_text(
    params: dict[str, Any], plan: GenerationPlan, seed: int, index: int = 0, expansion: str = ""
) -> tuple[str, str] | None:
    """(text, scheme) to embed, or None when the request turned metadata off."""
    if not params.get("save_metadata_to_images", True):
        return None
    if params.get("metadata_scheme") == "a1111":
        return a1111_parameters(params, plan, seed, index, expansion), "a1111"
    # ASCII-only JSON: Fooocus's EXIF reader (JPEG/WebP) only understands plain ASCII strings.
    return json.dumps(fooocus_parameters(params, plan, seed, index, expansion), ensure_ascii=True), "fooocus"
