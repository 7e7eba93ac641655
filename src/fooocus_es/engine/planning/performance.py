"""Fooocus performance modes: step counts and the overrides the few-step modes force (pure)."""

from __future__ import annotations

from typing import Any, Final

from fooocus_es.engine.planning.demo_names import DEMO_CHECKPOINT, DEMO_PERFORMANCE_LORAS

PERFORMANCE_NAMES: Final = ("Quality", "Speed", "Extreme Speed", "Lightning", "Hyper-SD")

# txt2img steps, and the step count Fooocus uses for upscale/vary.
STEPS: Final[dict[str, int]] = {"Quality": 60, "Speed": 30, "Extreme Speed": 8, "Lightning": 4, "Hyper-SD": 4}
STEPS_UOV: Final[dict[str, int]] = {"Quality": 36, "Speed": 18, "Extreme Speed": 8, "Lightning": 4, "Hyper-SD": 4}

# Distilled modes run at cfg 1 with their own sampler; Fooocus forces these regardless of the request.
_FEW_STEP_COMMON: Final[dict[str, Any]] = {
    "sharpness": 0.0,
    "guidance_scale": 1.0,
    "adaptive_cfg": 1.0,
    "refiner_model_name": "None",
    "refiner_switch": 1.0,
    "adm_scaler_positive": 1.0,
    "adm_scaler_negative": 1.0,
    "adm_scaler_end": 0.0,
}
FORCED_OVERRIDES: Final[dict[str, dict[str, Any]]] = {
    "Extreme Speed": {**_FEW_STEP_COMMON, "sampler_name": "lcm", "scheduler_name": "lcm"},
    "Lightning": {**_FEW_STEP_COMMON, "sampler_name": "euler", "scheduler_name": "sgm_uniform"},
    "Hyper-SD": {**_FEW_STEP_COMMON, "sampler_name": "dpmpp_sde_gpu", "scheduler_name": "karras"},
}


# The distilled modes' LoRA, appended to the task's LoRAs as Fooocus does: (file, weight, download URL).
PERFORMANCE_LORAS: Final[dict[str, tuple[str, float, str]]] = {
    "Extreme Speed": (
        "sdxl_lcm_lora.safetensors",
        1.0,
        "https://huggingface.co/lllyasviel/misc/resolve/main/sdxl_lcm_lora.safetensors",
    ),
    "Lightning": (
        "sdxl_lightning_4step_lora.safetensors",
        1.0,
        "https://huggingface.co/mashb1t/misc/resolve/main/sdxl_lightning_4step_lora.safetensors",
    ),
    "Hyper-SD": (
        "sdxl_hyper_sd_4step_lora.safetensors",
        0.8,
        "https://huggingface.co/mashb1t/misc/resolve/main/sdxl_hyper_sd_4step_lora.safetensors",
    ),
}


def steps_for(performance: str, overwrite_step: int = -1, *, uov: bool = False) -> int:
    if overwrite_step > 0:
        return overwrite_step
    return (STEPS_UOV if uov else STEPS)[performance]


def forced_overrides(performance: str) -> dict[str, Any]:
    return dict(FORCED_OVERRIDES.get(performance, {}))


def lora_file_for_model(lora: str, base_model: str) -> str:
    """The performance LoRA file for `base_model`: the demo model gets its own."""
    return DEMO_PERFORMANCE_LORAS.get(lora, lora) if base_model == DEMO_CHECKPOINT else lora


def performance_lora(performance: str) -> tuple[str, float] | None:
    """The (file, weight) a few-step mode adds to the task's LoRAs; None for Quality and Speed."""
    entry = PERFORMANCE_LORAS.get(performance)
    return (entry[0], entry[1]) if entry else None
