"""GuidedUNet: Fooocus's guidance extras inside diffusers' SDXL pipeline, on the tiny demo model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import EDMDPMSolverMultistepScheduler, StableDiffusionXLPipeline

from fooocus_es.engine.diffusion import guidance as g
from fooocus_es.engine.diffusion.guided_unet import GuidanceSettings, GuidedUNet, wrap_unet
from fooocus_es.engine.diffusion.schedulers import make_scheduler
from fooocus_es.engine.models.store import ModelStore
from fooocus_es.engine.planning.demo_names import DEMO_CHECKPOINT

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:__array_wrap__ must accept:DeprecationWarning"),
]

NO_ADM = {"adm_scaler_positive": 1.0, "adm_scaler_negative": 1.0, "adm_scaler_end": 0.0}


@pytest.fixture(scope="module")
def pipe(demo_models: Path) -> StableDiffusionXLPipeline:
    torch.set_num_threads(2)
    return ModelStore(demo_models).load_pipeline(DEMO_CHECKPOINT)


def generate(
    pipe: StableDiffusionXLPipeline,
    unet: torch.nn.Module,
    guidance_scale: float,
    steps: int = 4,
    scheduler: Any = None,
) -> np.ndarray:
    """A per-task pipeline sharing the cached models, as engine/diffusion/pipeline.py builds one, `unet` swapped in."""
    components = {**pipe.components, "unet": unet, "scheduler": scheduler or pipe.scheduler}
    task = StableDiffusionXLPipeline(**components, add_watermarker=False)
    task.set_progress_bar_config(disable=True)
    return task(
        prompt="a photo of a cat",
        negative_prompt="blurry",
        width=64,
        height=64,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        generator=torch.Generator(device="cpu").manual_seed(7),
        output_type="np",
    ).images


def guided(pipe: StableDiffusionXLPipeline, **settings: Any) -> GuidedUNet:
    return GuidedUNet(pipe.unet, GuidanceSettings(**settings), pipe.scheduler.alphas_cumprod)


class CallLog:
    """Forward pre-hook on the inner UNet: batch size and time ids of every evaluation."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.calls: list[tuple[int, float, torch.Tensor]] = []
        self.handle = unet.register_forward_pre_hook(self.record, with_kwargs=True)

    def record(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        sample, timestep = args[0], args[1]
        self.calls.append((sample.shape[0], float(timestep), kwargs["added_cond_kwargs"]["time_ids"].clone()))

    def __enter__(self) -> CallLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


# -- on the real tiny pipeline -------------------------------------------------------------------


def test_extras_off_gives_the_plain_pipeline_image_bit_for_bit(pipe: StableDiffusionXLPipeline) -> None:
    plain = generate(pipe, pipe.unet, 4.0)
    wrapped = GuidedUNet(pipe.unet, GuidanceSettings.off(4.0), pipe.scheduler.alphas_cumprod)
    assert np.array_equal(generate(pipe, wrapped, 4.0), plain)
    # adaptive CFG inactive (scale <= adaptive_cfg) and ADM 1/1: still the plain image
    assert np.array_equal(generate(pipe, guided(pipe, guidance_scale=4.0, sharpness=0.0, **NO_ADM), 4.0), plain)
    assert wrap_unet(pipe.unet, GuidanceSettings.off(4.0), pipe.scheduler) is pipe.unet


def test_default_sharpness_changes_pixels_and_more_sharpness_changes_more(pipe: StableDiffusionXLPipeline) -> None:
    zero = generate(pipe, guided(pipe, guidance_scale=4.0, sharpness=0.0, **NO_ADM), 4.0)
    default = generate(pipe, guided(pipe, guidance_scale=4.0, sharpness=2.0, **NO_ADM), 4.0)
    strong = generate(pipe, guided(pipe, guidance_scale=4.0, sharpness=30.0, **NO_ADM), 4.0)
    assert not np.array_equal(np.round(default * 255), np.round(zero * 255))
    assert np.abs(strong - zero).mean() > 5 * np.abs(default - zero).mean()


def test_adaptive_cfg_and_adm_change_the_image(pipe: StableDiffusionXLPipeline) -> None:
    plain = generate(pipe, pipe.unet, 10.0)
    adaptive = generate(pipe, guided(pipe, guidance_scale=10.0, adaptive_cfg=7.0, sharpness=0.0, **NO_ADM), 10.0)
    adm = generate(pipe, guided(pipe, guidance_scale=10.0, adaptive_cfg=30.0, sharpness=0.0), 10.0)
    assert not np.array_equal(adaptive, plain)
    assert not np.array_equal(adm, plain)


def test_cfg_one_evaluates_the_unet_once_per_step_at_batch_one(pipe: StableDiffusionXLPipeline) -> None:
    with CallLog(pipe.unet) as log:
        generate(pipe, guided(pipe, guidance_scale=4.0), 4.0)
    assert [batch for batch, _, _ in log.calls] == [2, 2, 2, 2]  # cond and uncond in one call
    with CallLog(pipe.unet) as log:
        generate(pipe, guided(pipe, guidance_scale=1.0), 1.0)
    assert [batch for batch, _, _ in log.calls] == [1, 1, 1, 1]  # the uncond pass is skipped


def test_adm_ids_per_branch_until_the_end_then_consistent(pipe: StableDiffusionXLPipeline) -> None:
    with CallLog(pipe.unet) as log:
        generate(pipe, guided(pipe, guidance_scale=4.0, adm_scaler_end=0.3), 4.0)
    # Euler, 4 "leading" steps: t = 751, 501, 251, 1 -> progress 0.25, 0.50, 0.75, 1.0
    timesteps = [t for _, t, _ in log.calls]
    assert timesteps == [751.0, 501.0, 251.0, 1.0]
    first = log.calls[0][2]
    assert first.tolist() == [
        [51.0, 51.0, 0.0, 0.0, 64.0, 64.0],
        [96.0, 96.0, 0.0, 0.0, 64.0, 64.0],
    ]  # uncond x0.8, cond x1.5
    for _, _, ids in log.calls[1:]:
        assert ids.tolist() == [[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]] * 2
    with CallLog(pipe.unet) as log:  # CFG 1: only the cond rows, still emphasised early
        generate(pipe, guided(pipe, guidance_scale=1.0), 1.0)
    assert log.calls[0][2].tolist() == [[96.0, 96.0, 0.0, 0.0, 64.0, 64.0]]


@pytest.mark.parametrize(("sampler", "schedule"), [("euler", "karras"), ("dpmpp_2m_sde_gpu", "karras")])
def test_other_samplers_integer_and_fractional_timesteps(
    pipe: StableDiffusionXLPipeline, sampler: str, schedule: str
) -> None:
    def fresh() -> Any:
        return make_scheduler(sampler, schedule, pipe.scheduler.config)

    plain = generate(pipe, pipe.unet, 10.0, steps=6, scheduler=fresh())
    off = GuidedUNet(pipe.unet, GuidanceSettings.off(10.0), pipe.scheduler.alphas_cumprod)
    assert np.array_equal(generate(pipe, off, 10.0, steps=6, scheduler=fresh()), plain)
    extras = generate(pipe, guided(pipe, guidance_scale=10.0), 10.0, steps=6, scheduler=fresh())
    assert np.isfinite(extras).all() and not np.array_equal(extras, plain)


def test_wrapper_passes_through_unet_attributes(pipe: StableDiffusionXLPipeline) -> None:
    wrapped = guided(pipe, guidance_scale=4.0)
    assert wrapped.config is pipe.unet.config
    assert wrapped.dtype == pipe.unet.dtype and wrapped.device == pipe.unet.device
    assert wrapped.add_embedding is pipe.unet.add_embedding


def test_wrap_unet_refuses_schedulers_without_a_ddpm_schedule(pipe: StableDiffusionXLPipeline) -> None:
    edm = EDMDPMSolverMultistepScheduler()
    with pytest.raises(ValueError, match="noise schedule"):
        wrap_unet(pipe.unet, GuidanceSettings(), edm)
    assert wrap_unet(pipe.unet, GuidanceSettings.off(4.0), edm) is pipe.unet
    assert isinstance(wrap_unet(pipe.unet, GuidanceSettings(), pipe.scheduler), GuidedUNet)


# -- the wrapper's arithmetic, on a stub UNet with known outputs ----------------------------------


class StubUNet(torch.nn.Module):
    """Returns a fixed prediction whatever it is given."""

    def __init__(self, output: torch.Tensor) -> None:
        super().__init__()
        self.output = output

    def forward(self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: Any, **kwargs: Any) -> tuple:
        return (self.output.clone(),)


def sdxl_alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_wrapper_output_is_the_fooocus_prediction_for_both_halves(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(5)
    out = torch.randn(2, 4, 16, 16, generator=gen).to(dtype)
    sample = torch.randn(1, 4, 16, 16, generator=gen).to(dtype).repeat(2, 1, 1, 1)
    acp = sdxl_alphas_cumprod()
    settings = GuidanceSettings(guidance_scale=10.0, adaptive_cfg=7.0, sharpness=20.0, **NO_ADM)
    wrapped = GuidedUNet(StubUNet(out), settings, acp)
    t = torch.tensor(400.0)
    result = wrapped(sample, t, None, return_dict=False)[0]
    assert result.dtype == dtype and result.shape == out.shape

    uncond, cond = out.float().chunk(2)
    alpha_bar = acp[400]
    x0 = (sample[1:].float() - (1 - alpha_bar).sqrt() * cond) / alpha_bar.sqrt()
    progress = 1 - 400 / 999
    sharpened = g.sharpen_eps(cond, x0, 20.0, progress)
    expected = g.adaptive_cfg(sharpened, uncond, 10.0, 7.0, progress).to(dtype)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2
    assert torch.allclose(result[:1].float(), expected.float(), atol=tolerance)
    assert torch.equal(result[:1], result[1:])
    # diffusers' own combine then hands the sampler exactly this prediction
    u, c = result.chunk(2)
    assert torch.equal(u + 10.0 * (c - u), u)


def test_wrapper_v_prediction_converts_through_eps() -> None:
    gen = torch.Generator().manual_seed(6)
    out = torch.randn(2, 4, 8, 8, generator=gen)
    sample = torch.randn(1, 4, 8, 8, generator=gen).repeat(2, 1, 1, 1)
    acp = sdxl_alphas_cumprod()
    settings = GuidanceSettings(guidance_scale=10.0, adaptive_cfg=7.0, sharpness=0.0, **NO_ADM)
    result = GuidedUNet(StubUNet(out), settings, acp, prediction_type="v_prediction")(sample, 999, None)[0]
    # sharpness 0: adaptive CFG is an affine combination, the same in v space as in eps space
    uncond, cond = out.chunk(2)
    assert torch.allclose(result[:1], g.adaptive_cfg(cond, uncond, 10.0, 7.0, 0.0), atol=1e-4)


def test_wrapper_leaves_the_prediction_alone_without_cfg() -> None:
    out = torch.randn(1, 4, 8, 8)
    wrapped = GuidedUNet(StubUNet(out), GuidanceSettings(guidance_scale=1.0), sdxl_alphas_cumprod())
    assert torch.equal(wrapped(torch.randn(1, 4, 8, 8), 500, None, return_dict=False)[0], out)
