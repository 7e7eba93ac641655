"""Fooocus sampler/scheduler names -> diffusers schedulers, checked against k-diffusion's definitions."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from diffusers import DPMSolverMultistepScheduler, DPMSolverSDEScheduler, TCDScheduler, UniPCMultistepScheduler

from fooocus_es.engine.diffusion.schedulers import make_scheduler, prepare_for_image, step_eta
from fooocus_es.engine.models.sdxl.build_configs import SDXL_DIR
from fooocus_es.engine.planning.sampler_names import SAMPLER_NAMES, SCHEDULER_NAMES, supported_pairs, unsupported_reason

# diffusers 0.42's schedulers run numpy functions on torch tensors; numpy 2.4 warns on every call.
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:__array_wrap__ must accept:DeprecationWarning"),
]

BASE_CONFIG = json.loads((SDXL_DIR / "base/scheduler/scheduler_config.json").read_text())
SIGMA_MIN, SIGMA_MAX = 0.0291675, 14.614642  # SDXL's noise schedule at t = 0 and t = 999


def karras(n: int, rho: float = 7.0) -> np.ndarray:
    """k-diffusion's get_sigmas_karras, which Fooocus uses."""
    ramp = np.linspace(0, 1, n)
    lo, hi = SIGMA_MIN ** (1 / rho), SIGMA_MAX ** (1 / rho)
    return np.append((hi + ramp * (lo - hi)) ** rho, 0.0)


def test_names_are_fooocus_lists() -> None:
    assert len(SAMPLER_NAMES) == 24 and len(set(SAMPLER_NAMES)) == 24
    assert len(SCHEDULER_NAMES) == 11 and len(set(SCHEDULER_NAMES)) == 11


def test_the_name_module_is_pure() -> None:
    code = "import sys, fooocus_es.engine.planning.sampler_names; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fooocus_defaults_and_performance_modes_are_supported() -> None:
    for pair in [
        ("dpmpp_2m_sde_gpu", "karras"),  # the default
        ("euler", "sgm_uniform"),  # Lightning
        ("lcm", "lcm"),  # Extreme Speed
        ("dpmpp_sde_gpu", "karras"),  # Hyper-SD
        ("euler_ancestral", "normal"),
        ("dpmpp_2m", "exponential"),
    ]:
        assert unsupported_reason(*pair) is None, pair


@pytest.mark.parametrize(
    ("sampler", "scheduler", "words"),
    [
        ("heunpp2", "karras", "heunpp2"),
        ("restart", "normal", "restart"),
        ("dpm_fast", "karras", "dpm_fast"),
        ("euler", "align_your_steps", "align_your_steps"),
        ("euler", "edm_playground_v2.5", "EDM"),
        ("euler_ancestral", "karras", "karras"),
        ("lcm", "karras", "distilled"),
        ("warp", "karras", "unknown sampler"),
    ],
)
def test_unfaithful_pairs_are_refused_with_a_reason(sampler: str, scheduler: str, words: str) -> None:
    reason = unsupported_reason(sampler, scheduler)
    assert reason is not None and words in reason
    if sampler in SAMPLER_NAMES:
        with pytest.raises(ValueError, match=words):
            make_scheduler(sampler, scheduler, BASE_CONFIG)


def test_every_supported_pair_builds() -> None:
    # KDPM2's constructor takes 0.5 s (it walks all 1000 training steps); two schedules suffice for it.
    slow = {"dpm_2", "dpm_2_ancestral"}
    pairs = [(a, b) for a, b in supported_pairs() if a not in slow or b in ("karras", "sgm_uniform")]
    for sampler, scheduler in pairs:
        instance = make_scheduler(sampler, scheduler, BASE_CONFIG)
        instance.set_timesteps(5)
        assert len(instance.timesteps) >= 5, (sampler, scheduler)


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpm_2", "lms", "dpmpp_2m", "dpmpp_2m_sde_gpu", "dpmpp_sde"])
def test_karras_sigmas_match_k_diffusion(sampler: str) -> None:
    scheduler = make_scheduler(sampler, "karras", BASE_CONFIG)
    scheduler.set_timesteps(8)
    # Second-order schedulers repeat each inner sigma; the distinct ones are the schedule.
    distinct = np.array([float(s) for s in dict.fromkeys(float(s) for s in scheduler.sigmas)])
    assert np.allclose(distinct, karras(8), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize(
    ("scheduler", "timesteps"),
    [
        ("normal", [999, 666, 333, 0]),  # ComfyUI: linspace(t_max, t_min, n)
        ("simple", [999, 749, 499, 249]),  # every 1000/n-th sigma from the top
        ("sgm_uniform", [999, 749, 499, 249]),  # linspace(t_max, t_min, n + 1)[:-1], rounded
        ("ddim_uniform", [751, 501, 251, 1]),  # 1, 1 + 1000/n, ... reversed
    ],
)
def test_spacing_schedules_match_comfyui(scheduler: str, timesteps: list[int]) -> None:
    instance = make_scheduler("euler", scheduler, BASE_CONFIG)
    instance.set_timesteps(4)
    assert [round(float(t)) for t in instance.timesteps] == timesteps


def test_sampler_options() -> None:
    sde = make_scheduler("dpmpp_2m_sde_gpu", "karras", BASE_CONFIG)
    assert isinstance(sde, DPMSolverMultistepScheduler)
    assert (sde.config.algorithm_type, sde.config.solver_order) == ("sde-dpmsolver++", 2)
    assert make_scheduler("dpmpp_3m_sde", "karras", BASE_CONFIG).config.solver_order == 3
    assert make_scheduler("dpmpp_2m", "karras", BASE_CONFIG).config.algorithm_type == "dpmsolver++"
    unipc = make_scheduler("uni_pc", "normal", BASE_CONFIG)
    assert isinstance(unipc, UniPCMultistepScheduler) and unipc.config.solver_type == "bh1"
    assert make_scheduler("uni_pc_bh2", "normal", BASE_CONFIG).config.solver_type == "bh2"
    ddim = make_scheduler("ddim", "normal", BASE_CONFIG)
    assert (ddim.config.clip_sample, ddim.config.set_alpha_to_one) == (False, False)
    # A karras flag in the model's own config must not leak into a "normal" request.
    assert not make_scheduler("euler", "normal", {**BASE_CONFIG, "use_karras_sigmas": True}).config.use_karras_sigmas
    assert (
        make_scheduler("euler", "normal", {**BASE_CONFIG, "prediction_type": "v_prediction"}).config.prediction_type
        == "v_prediction"
    )


def test_per_image_settings() -> None:
    sde = make_scheduler("dpmpp_sde", "karras", BASE_CONFIG)
    assert isinstance(sde, DPMSolverSDEScheduler)
    prepare_for_image(sde, 1234)
    assert sde.noise_sampler_seed == 1234
    tcd = make_scheduler("tcd", "tcd", BASE_CONFIG)
    assert isinstance(tcd, TCDScheduler) and step_eta(tcd) == 0.3
    assert step_eta(make_scheduler("ddim", "normal", BASE_CONFIG)) == 0.0
