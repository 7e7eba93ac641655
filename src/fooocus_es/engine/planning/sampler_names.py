"""Fooocus sampler and scheduler names, and which pairs have a faithful diffusers mapping (pure, no torch).

The API validates requests with these; `engine.diffusion.schedulers` turns a valid pair into a diffusers
scheduler. The tables here describe what each diffusers scheduler class can express, so a pair is
rejected up front (HTTP 4xx naming the field) rather than failing in the runner.
"""

from __future__ import annotations

from typing import Final

# Fooocus's `flags.KSAMPLER_NAMES` + `EXTRA_SAMPLERS` (ComfyUI's k-samplers), in Fooocus's order.
SAMPLER_NAMES: Final = (
    "euler",
    "euler_ancestral",
    "heun",
    "heunpp2",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpm_fast",
    "dpm_adaptive",
    "dpmpp_2s_ancestral",
    "dpmpp_sde",
    "dpmpp_sde_gpu",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu",
    "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu",
    "ddpm",
    "lcm",
    "tcd",
    "restart",
    "ddim",
    "uni_pc",
    "uni_pc_bh2",
)

# Fooocus's `flags.SCHEDULER_NAMES`.
SCHEDULER_NAMES: Final = (
    "normal",
    "karras",
    "exponential",
    "sgm_uniform",
    "simple",
    "ddim_uniform",
    "lcm",
    "turbo",
    "align_your_steps",
    "tcd",
    "edm_playground_v2.5",
)

# Samplers diffusers has no equivalent of (a different solver would give different images).
UNSUPPORTED_SAMPLERS: Final[dict[str, str]] = {
    "heunpp2": "heunpp2 (Heun++ with 3 model evaluations per step) has no diffusers scheduler",
    "dpm_fast": "dpm_fast (fixed-step DPM-Solver-fast) has no diffusers scheduler",
    "dpm_adaptive": "dpm_adaptive (adaptive step size) has no diffusers scheduler",
    "dpmpp_2s_ancestral": "dpmpp_2s_ancestral has no diffusers scheduler (DPMSolverSinglestep is not ancestral)",
    "restart": "restart (Restart sampling) has no diffusers scheduler",
}

# Sigma schedules that need a hand-made sigma list no diffusers scheduler config can express.
UNSUPPORTED_SCHEDULERS: Final[dict[str, str]] = {
    "turbo": "the turbo schedule (SD-Turbo's fixed timesteps) has no diffusers scheduler setting",
    "align_your_steps": "align_your_steps (NVIDIA's tabulated sigmas) has no diffusers scheduler setting",
    "edm_playground_v2.5": "edm_playground_v2.5 is only for EDM models (Playground v2.5), which are not supported",
}

# Schedules expressed as diffusers' `timestep_spacing`, checked against ComfyUI's definitions:
# normal = linspace(t_max, t_min, n) -> "linspace"; simple and sgm_uniform take every (1000/n)th
# timestep from the top -> "trailing"; ddim_uniform takes 1, 1+1000/n, ... -> "leading" with
# steps_offset 1. Fooocus runs lcm/tcd as sgm_uniform (over the distilled 50-step table, which
# LCMScheduler/TCDScheduler use natively and the other samplers approximate with the full one).
SPACING_SCHEDULES: Final[dict[str, str]] = {
    "normal": "linspace",
    "sgm_uniform": "trailing",
    "simple": "trailing",
    "ddim_uniform": "leading",
    "lcm": "trailing",
    "tcd": "trailing",
}
# Schedules expressed as a sigma-space flag, for the classes that have it.
SIGMA_SCHEDULES: Final[dict[str, str]] = {"karras": "use_karras_sigmas", "exponential": "use_exponential_sigmas"}

# Samplers whose diffusers class has no use_karras_sigmas / use_exponential_sigmas.
_SPACING_ONLY: Final = frozenset({"euler_ancestral", "ddim", "ddpm"})
# LCM and TCD step on their own distilled schedule; only the uniform-from-the-top ones match it.
_DISTILLED: Final = frozenset({"lcm", "tcd"})
_DISTILLED_SCHEDULES: Final = frozenset({"lcm", "tcd", "sgm_uniform", "simple"})


def unsupported_reason(sampler: str, scheduler: str) -> str | None:
    """Why this sampler/scheduler pair cannot run faithfully on diffusers, or None when it can."""
    if sampler not in SAMPLER_NAMES:
        return f"unknown sampler {sampler!r}"
    if scheduler not in SCHEDULER_NAMES:
        return f"unknown scheduler {scheduler!r}"
    if sampler in UNSUPPORTED_SAMPLERS:
        return UNSUPPORTED_SAMPLERS[sampler]
    if scheduler in UNSUPPORTED_SCHEDULERS:
        return UNSUPPORTED_SCHEDULERS[scheduler]
    if sampler in _DISTILLED:
        if scheduler not in _DISTILLED_SCHEDULES:
            allowed = ", ".join(sorted(_DISTILLED_SCHEDULES))
            return f"the {sampler} sampler runs on its own distilled schedule; use scheduler {allowed}"
        return None
    if scheduler in SIGMA_SCHEDULES and sampler in _SPACING_ONLY:
        return f"the {sampler} sampler has no {scheduler} sigmas in diffusers; use normal, simple or sgm_uniform"
    return None


def supported_pairs() -> list[tuple[str, str]]:
    """Every (sampler, scheduler) pair that `unsupported_reason` accepts."""
    return [(a, b) for a in SAMPLER_NAMES for b in SCHEDULER_NAMES if unsupported_reason(a, b) is None]
