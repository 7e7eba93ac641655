"""Fooocus sampler + scheduler names -> a diffusers scheduler configured from the model's own.

A Fooocus "sampler" is the solver (a diffusers scheduler class plus options); a Fooocus
"scheduler" is the sigma schedule, which diffusers expresses as `timestep_spacing` or a
`use_*_sigmas` flag. Every scheduler is built with `from_config(model's scheduler config)` so the
noise schedule and prediction type of the checkpoint are kept.

Not bit-exact with Fooocus: ComfyUI's SDE samplers draw Brownian-tree noise (on the GPU for the
`_gpu` variants) where diffusers draws Gaussian noise per step, so only the style matches.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Final

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    TCDScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from fooocus_es.engine.diffusion.sampling import GenerationFailed
from fooocus_es.engine.planning.sampler_names import (
    SAMPLER_NAMES,
    SCHEDULER_NAMES,
    SIGMA_SCHEDULES,
    SPACING_SCHEDULES,
    unsupported_reason,
)

__all__ = [
    "SAMPLER_NAMES", "SCHEDULER_NAMES", "fooocus_schedule", "make_scheduler", "prepare_for_image", "sampler_order",
    "step_eta", "unsupported_reason",
]  # fmt: skip

_DPMPP_2M: Final = {"algorithm_type": "dpmsolver++", "solver_order": 2}
_DPMPP_2M_SDE: Final = {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}
_DPMPP_3M_SDE: Final = {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}

# sampler -> (class, options). SDXL's x0 is not bounded to [-1, 1]: never clip it (DDIM/DDPM's
# defaults do); DDIM's last step must not jump to alpha 1 (SDXL's own config says the same).
_SAMPLERS: Final[dict[str, tuple[type[SchedulerMixin], dict[str, Any]]]] = {
    "euler": (EulerDiscreteScheduler, {}),
    "euler_ancestral": (EulerAncestralDiscreteScheduler, {}),
    "heun": (HeunDiscreteScheduler, {}),
    "dpm_2": (KDPM2DiscreteScheduler, {}),
    "dpm_2_ancestral": (KDPM2AncestralDiscreteScheduler, {}),
    "lms": (LMSDiscreteScheduler, {}),
    "dpmpp_sde": (DPMSolverSDEScheduler, {}),
    "dpmpp_sde_gpu": (DPMSolverSDEScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, _DPMPP_2M),
    "dpmpp_2m_sde": (DPMSolverMultistepScheduler, _DPMPP_2M_SDE),
    "dpmpp_2m_sde_gpu": (DPMSolverMultistepScheduler, _DPMPP_2M_SDE),
    "dpmpp_3m_sde": (DPMSolverMultistepScheduler, _DPMPP_3M_SDE),
    "dpmpp_3m_sde_gpu": (DPMSolverMultistepScheduler, _DPMPP_3M_SDE),
    "ddpm": (DDPMScheduler, {"clip_sample": False}),
    "lcm": (LCMScheduler, {"clip_sample": False}),
    "tcd": (TCDScheduler, {"clip_sample": False}),
    "ddim": (DDIMScheduler, {"clip_sample": False, "set_alpha_to_one": False}),
    # ComfyUI's uni_pc is the bh1 variant. diffusers' bh1 divides by an infinite log-SNR step when
    # the last sigma is 0 (NaN image), so it stops at sigma_min (~0.03, invisible) instead.
    "uni_pc": (UniPCMultistepScheduler, {"solver_type": "bh1", "final_sigmas_type": "sigma_min"}),
    "uni_pc_bh2": (UniPCMultistepScheduler, {"solver_type": "bh2"}),
}

# Fooocus's tcd sampler runs with gamma 0.3 (diffusers calls it eta); the pipeline's default is 0.
_TCD_GAMMA: Final = 0.3
_SIGMA_FLAGS: Final = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")


def make_scheduler(sampler_name: str, scheduler_name: str, base_config: Mapping[str, Any]) -> SchedulerMixin:
    """A fresh scheduler for one task; raises ValueError for pairs `unsupported_reason` rejects."""
    reason = unsupported_reason(sampler_name, scheduler_name)
    if reason is not None:
        raise ValueError(reason)
    cls, options = _SAMPLERS[sampler_name]
    return cls.from_config(base_config, **options, **_schedule_options(cls, scheduler_name))


def sampler_order(sampler_name: str) -> int:
    """UNet calls per step of the sampler's scheduler class (2 for Heun, DPM2, DPM++ SDE), without building one."""
    cls, _options = _SAMPLERS[sampler_name]
    return int(getattr(cls, "order", 1))


def _schedule_options(cls: type[SchedulerMixin], scheduler_name: str) -> dict[str, Any]:
    accepted = inspect.signature(cls.__init__).parameters
    # Reset every sigma flag: the model's config may carry one (a diffusers folder saved with karras).
    options: dict[str, Any] = {flag: False for flag in _SIGMA_FLAGS if flag in accepted}
    if scheduler_name in SIGMA_SCHEDULES:
        options[SIGMA_SCHEDULES[scheduler_name]] = True
        # Karras/exponential span [sigma_min, sigma_max] of the model, as k-diffusion does; with
        # SDXL's default "leading" spacing some classes would start from a lower sigma_max.
        spacing = "linspace"
    else:
        spacing = SPACING_SCHEDULES[scheduler_name]
    if "timestep_spacing" in accepted:
        options["timestep_spacing"] = spacing
    return options


def prepare_for_image(scheduler: SchedulerMixin, seed: int) -> None:
    """Tie scheduler-drawn noise to the image's seed (call before each image).

    DPMSolverSDEScheduler draws its Brownian-tree noise from its own seed, not the pipeline's
    generator, and picks a random one when unset: the same plan would give different images.
    """
    if isinstance(scheduler, DPMSolverSDEScheduler):
        scheduler.noise_sampler_seed = seed
        scheduler.noise_sampler = None


def step_eta(scheduler: SchedulerMixin) -> float:
    """The `eta` to pass to the pipeline: TCD's stochastic gamma, 0 (deterministic DDIM) otherwise."""
    return _TCD_GAMMA if isinstance(scheduler, TCDScheduler) else 0.0


MAX_SCHEDULE = 1000  # a schedule longer than the 1000 training timesteps is not defined


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
