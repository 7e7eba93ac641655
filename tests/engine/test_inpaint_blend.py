"""The inpaint blend keeps unmasked latents at the loop's own noise level, whatever the denoise.

DDIM (Fooocus's ddim, and LCM and TCD alike) noises by the timestep it is given, so a wrong index
shows; Euler-type schedulers with a begin index noise by their own step index instead.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from diffusers import DDIMScheduler

from fooocus_es.engine.diffusion.image_to_image import _KeepUnmasked
from fooocus_es.engine.diffusion.schedulers import fooocus_schedule


def _img2img_loop(steps: int, denoise: float) -> tuple[SimpleNamespace, torch.Tensor]:
    """What StableDiffusionXLImg2ImgPipeline holds during its loop: the scheduler set up by
    `get_timesteps`, and `num_timesteps`, the length of the tail it enumerates."""
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, set_alpha_to_one=False
    )
    schedule, strength = fooocus_schedule(steps, denoise)
    scheduler.set_timesteps(schedule)
    begin = schedule - min(int(schedule * strength), schedule)
    tail = scheduler.timesteps[begin:]
    return SimpleNamespace(scheduler=scheduler, num_timesteps=len(tail)), tail


@pytest.mark.parametrize("denoise", [1.0, 0.5, 0.3])
def test_unmasked_latents_follow_the_loops_timesteps_and_end_clean(denoise: float) -> None:
    steps = 4
    pipe, tail = _img2img_loop(steps, denoise)
    assert len(tail) == steps
    original = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4] = 1.0  # left half inpainted, right half kept
    blend = _KeepUnmasked(original, mask, seed=7)
    for i in range(steps):
        latents = torch.full_like(original, 5.0)
        tensors = {"latents": latents}
        blend(pipe, i, tensors)
        out = tensors["latents"]
        assert torch.equal(out[..., :4], latents[..., :4])  # the masked area is the sampler's
        last = i == steps - 1  # the last step puts back the clean original
        expected = original if last else pipe.scheduler.add_noise(original, blend.noise, tail[i + 1 : i + 2])
        torch.testing.assert_close(out[..., 4:], expected[..., 4:], rtol=0, atol=1e-6)
