"""Fooocus's guidance extras, pinned on small tensors with hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from fooocus_es.engine.diffusion import guidance as g


def full(value: float, shape: tuple[int, ...] = (1, 4, 2, 2), dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.full(shape, value, dtype=dtype)


# -- progress ------------------------------------------------------------------------------------


def test_progress_is_one_minus_t_over_999() -> None:
    assert g.progress_from_timestep(999) == 0.0
    assert g.progress_from_timestep(0) == 1.0
    assert g.progress_from_timestep(499.5) == pytest.approx(0.5)
    assert g.progress_from_timestep(1500) == 0.0  # clamped
    t = torch.tensor([999.0, 749.25, 0.0])
    assert torch.allclose(g.progress_from_timestep(t), torch.tensor([0.0, 0.25, 1.0]))
    assert g.progress_from_timestep(torch.tensor(999)).dtype == torch.float32  # int64 timesteps (DPM++)
    assert g.progress_from_timestep(9, num_train_timesteps=10) == 0.0


# -- CFG -----------------------------------------------------------------------------------------


def test_cfg_formula_and_scale_one_returns_cond_itself() -> None:
    cond, uncond = full(3.0), full(1.0)
    assert torch.equal(g.cfg(cond, uncond, 4.0), full(1.0 + 4.0 * (3.0 - 1.0)))  # 9
    assert g.cfg(cond, uncond, 1.0) is cond
    assert g.cfg(cond, None, 1.0) is cond  # no uncond pass at all
    with pytest.raises(ValueError, match="unconditional"):
        g.cfg(cond, None, 4.0)


def test_cfg_is_bit_identical_to_the_diffusers_expression() -> None:
    torch.manual_seed(0)
    cond, uncond = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    assert torch.equal(g.cfg(cond, uncond, 7.5), uncond + 7.5 * (cond - uncond))


def test_adaptive_cfg_endpoints_and_linear_between() -> None:
    cond, uncond = full(3.0), full(1.0)
    real, mimic = full(1.0 + 10.0 * 2.0), full(1.0 + 7.0 * 2.0)  # 21 and 15
    assert torch.equal(g.adaptive_cfg(cond, uncond, 10.0, 7.0, 0.0), mimic)
    assert torch.equal(g.adaptive_cfg(cond, uncond, 10.0, 7.0, 1.0), real)
    assert torch.allclose(g.adaptive_cfg(cond, uncond, 10.0, 7.0, 0.25), full(21 * 0.25 + 15 * 0.75))  # 16.5
    # linear in progress: equal steps in p give equal steps in the result
    values = [g.adaptive_cfg(cond, uncond, 10.0, 7.0, p)[0, 0, 0, 0].item() for p in (0.0, 0.2, 0.4, 0.6)]
    steps = [b - a for a, b in zip(values, values[1:], strict=False)]
    assert steps == pytest.approx([1.2, 1.2, 1.2])


def test_adaptive_cfg_accepts_device_tensor_progress_per_sample() -> None:
    cond, uncond = full(3.0, (2, 1, 1, 1)), full(1.0, (2, 1, 1, 1))
    out = g.adaptive_cfg(cond, uncond, 10.0, 7.0, torch.tensor([0.0, 1.0]))
    assert out.flatten().tolist() == [15.0, 21.0]
    assert torch.equal(g.adaptive_cfg(cond, uncond, 10.0, 7.0, torch.tensor(0.5)), full(18.0, (2, 1, 1, 1)))


@pytest.mark.parametrize("scale", [4.0, 7.0])
def test_adaptive_cfg_at_or_below_mimic_scale_is_plain_cfg(scale: float) -> None:
    torch.manual_seed(1)
    cond, uncond = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4)
    for progress in (0.0, 0.3, 1.0):
        assert torch.equal(g.adaptive_cfg(cond, uncond, scale, 7.0, progress), g.cfg(cond, uncond, scale))


def test_adaptive_cfg_keeps_float16() -> None:
    cond, uncond = full(3.0, dtype=torch.float16), full(1.0, dtype=torch.float16)
    out = g.adaptive_cfg(cond, uncond, 10.0, 7.0, torch.tensor([0.5]))
    assert out.dtype == torch.float16
    assert torch.equal(out, full(18.0, dtype=torch.float16))


# -- anisotropic filter and sharpness ------------------------------------------------------------


def step_edge_image(noise: float = 0.0, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Left half -1, right half +1 in every channel, plus optional Gaussian noise."""
    image = torch.full((1, 4, size, size), -1.0)
    image[..., size // 2 :] = 1.0
    if noise:
        image = image + noise * torch.randn(image.shape, generator=torch.Generator().manual_seed(seed))
    return image


def test_filter_keeps_a_constant_image() -> None:
    x = full(0.37, (1, 4, 16, 16))
    assert torch.allclose(g.anisotropic_filter(x), x, atol=1e-6)


def test_filter_preserves_the_edge_and_smooths_the_noise() -> None:
    clean = step_edge_image()
    noisy = step_edge_image(noise=0.1)
    out = g.anisotropic_filter(noisy, guide=clean)
    # flat regions: noise is averaged away (13x13 window: std drops several-fold)
    left, right = out[..., 4:12, 2:12], out[..., 4:12, 20:30]
    assert left.std() < 0.3 * (noisy[..., 4:12, 2:12]).std()
    assert right.std() < 0.3 * (noisy[..., 4:12, 20:30]).std()
    # the edge: across it the guide differs by L1 = 4 channels x 2 std = 8, range weight
    # exp(-0.5 * 8^2 / 3^2) ~ 0.03, so the two sides stay apart and the step stays ~2 tall
    step = out[..., 15:17].mean(dim=(0, 1, 2))
    assert step[1] - step[0] > 1.8
    # a plain (guide-free) Gaussian blur of the same width would have smeared it
    assert (out[..., 14] - clean[..., 14]).abs().max() < 0.2


def test_filter_without_guide_uses_the_input_itself() -> None:
    noisy = step_edge_image(noise=0.1)
    assert torch.equal(g.anisotropic_filter(noisy), g.anisotropic_filter(noisy, guide=noisy))


def test_filter_guide_scale_and_offset_do_not_matter() -> None:
    noisy, clean = step_edge_image(noise=0.1), step_edge_image()
    assert torch.allclose(g.anisotropic_filter(noisy, clean), g.anisotropic_filter(noisy, 7.0 * clean + 3.0), atol=1e-5)


def test_filter_row_passes_agree() -> None:
    torch.manual_seed(2)
    x, guide = torch.randn(2, 4, 20, 24), torch.randn(2, 4, 20, 24)
    whole = g.anisotropic_filter(x, guide, rows_per_pass=13)
    for rows in (1, 4):
        assert torch.allclose(g.anisotropic_filter(x, guide, rows_per_pass=rows), whole, atol=1e-5)


def test_filter_hand_computed_3x3() -> None:
    # 1 channel, 3x3 kernel: centre pixel of a 3x3 image whose guide is flat -> pure Gaussian mean.
    x = torch.arange(9, dtype=torch.float32).view(1, 1, 3, 3)
    out = g.anisotropic_filter(x, torch.zeros_like(x), kernel_size=3, sigma_space=1.0)
    w1 = torch.exp(torch.tensor([-0.5, 0.0, -0.5]))
    w = (w1[:, None] * w1[None, :]) / w1.sum() ** 2
    assert out[0, 0, 1, 1].item() == pytest.approx((w * x[0, 0]).sum().item(), abs=1e-6)
    # range term: one guide pixel differing by d (in standardised units) is weighted exp(-d^2 / 18)
    guide = torch.zeros(1, 1, 3, 3)
    guide[0, 0, 0, 0] = 1.0
    std, mean = torch.std_mean(guide)
    d = (1.0 / (std + 1e-5)).item()  # centre vs corner distance after standardising
    corner = w[0, 0] * math.exp(-0.5 * d * d / 9.0)
    weights = w.clone()
    weights[0, 0] = corner
    expected = (weights * x[0, 0]).sum() / weights.sum()
    got = g.anisotropic_filter(x, guide, kernel_size=3, sigma_space=1.0)[0, 0, 1, 1]
    assert got.item() == pytest.approx(expected.item(), abs=1e-5)


def test_filter_handles_latents_smaller_than_the_window() -> None:
    x = torch.randn(1, 4, 5, 6)
    assert g.anisotropic_filter(x).shape == x.shape


def test_sharpness_zero_is_the_input_itself() -> None:
    eps, x0 = step_edge_image(noise=0.3), step_edge_image()
    assert g.sharpen_eps(eps, x0, 0.0, 1.0) is eps
    assert torch.equal(g.sharpen_eps(eps, x0, 2.0, 0.0), eps)  # alpha = 0 at the first step


def test_sharpness_weight_is_0_001_times_sharpness_times_progress() -> None:
    assert g.sharpness_alpha(2.0, 0.5) == pytest.approx(0.001)
    assert g.sharpness_alpha(30.0, 1.0) == pytest.approx(0.03)
    eps, x0 = step_edge_image(noise=0.3), step_edge_image()
    filtered = g.anisotropic_filter(eps, x0)
    out = g.sharpen_eps(eps, x0, 20.0, 0.5)  # alpha 0.01
    assert torch.allclose(out, 0.01 * filtered + 0.99 * eps, atol=1e-6)


def test_sharpness_changes_flat_noise_more_than_the_edge_and_grows_with_progress() -> None:
    eps, x0 = step_edge_image(noise=0.3), step_edge_image()
    changes = []
    for progress in (0.25, 0.5, 1.0):
        out = g.sharpen_eps(eps, x0, 30.0, progress)
        changes.append((out - eps).abs().mean().item())
    assert changes[0] < changes[1] < changes[2]
    assert changes[1] == pytest.approx(2 * changes[0], rel=1e-4)  # linear in alpha
    # the edge itself (the step between columns 15 and 16) is kept: only the noise is removed
    out = g.sharpen_eps(eps, x0, 30.0, 1.0)
    filtered = g.anisotropic_filter(eps, x0)
    jump_before = (eps[..., 16] - eps[..., 15]).mean()
    jump_after = (filtered[..., 16] - filtered[..., 15]).mean()
    assert jump_after == pytest.approx(jump_before.item(), abs=0.15)
    assert (out - eps).abs().max() > 0


def test_sharpness_with_per_sample_progress_tensor() -> None:
    eps = torch.cat([step_edge_image(noise=0.3, seed=1), step_edge_image(noise=0.3, seed=2)])
    x0 = torch.cat([step_edge_image(), step_edge_image()])
    out = g.sharpen_eps(eps, x0, 10.0, torch.tensor([0.0, 1.0]))
    assert torch.equal(out[0], eps[0])
    assert not torch.equal(out[1], eps[1])


def test_float16_in_float16_out() -> None:
    eps, x0 = step_edge_image(noise=0.3).half(), step_edge_image().half()
    assert g.anisotropic_filter(eps, x0).dtype == torch.float16
    out = g.sharpen_eps(eps, x0, 2.0, torch.tensor(0.9))
    assert out.dtype == torch.float16 and out.device == eps.device
    reference = g.sharpen_eps(eps.float(), x0.float(), 2.0, 0.9)
    assert torch.allclose(out.float(), reference, atol=2e-3)


# -- schedule conversions ------------------------------------------------------------------------


def sdxl_alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2  # scaled_linear
    return torch.cumprod(1 - betas, 0).float()


def test_alpha_bar_at_integer_and_fractional_timesteps() -> None:
    acp = sdxl_alphas_cumprod()
    assert torch.allclose(g.alpha_bar_at(torch.tensor([0, 500, 999]), acp), acp[[0, 500, 999]], rtol=1e-5)
    mid = g.alpha_bar_at(torch.tensor(500.5), acp)
    assert acp[501] < mid < acp[500]


def test_x0_and_v_conversions_round_trip() -> None:
    torch.manual_seed(3)
    x0, eps = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4)
    a = torch.tensor(0.3)
    sample = a.sqrt() * x0 + (1 - a).sqrt() * eps
    assert torch.allclose(g.predicted_x0(sample, eps, a), x0, atol=1e-5)
    v = a.sqrt() * eps - (1 - a).sqrt() * x0
    assert torch.allclose(g.eps_from_v(sample, v, a), eps, atol=1e-5)
    assert torch.allclose(g.v_from_eps(sample, eps, a), v, atol=1e-5)


# -- ADM -----------------------------------------------------------------------------------------


def test_adm_scaled_original_size_and_unchanged_target() -> None:
    # Fooocus's default 1152x896 (W x H); rows are SDXL's (orig h, orig w, crop top, left, target h, w)
    assert g.adm_time_ids(896, 1152, 1.5) == (1344.0, 1728.0, 0.0, 0.0, 896.0, 1152.0)
    assert g.adm_time_ids(896, 1152, 0.8) == (716.0, 921.0, 0.0, 0.0, 896.0, 1152.0)  # int() truncates 716.8, 921.6
    assert g.adm_consistent_ids(896, 1152) == (896.0, 1152.0, 0.0, 0.0, 896.0, 1152.0)
    assert g.adm_consistent_ids(1000, 1000) == (1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0)  # target rounded to 64
    assert [g.round_to_64(v) for v in (95, 100, 1000, 1152)] == [64, 128, 1024, 1152]
    assert [g.round_to_64(v) for v in (32, 96, 160)] == [0, 128, 128]  # Python's round: halves go to even


def test_adm_branches_follow_progress_and_end() -> None:
    kwargs = {"positive_scale": 1.5, "negative_scale": 0.8, "end": 0.3}
    cond, uncond = g.adm_branch_time_ids(1024, 1024, progress=0.0, **kwargs)
    assert cond == (1536.0, 1536.0, 0.0, 0.0, 1024.0, 1024.0)
    assert uncond == (819.0, 819.0, 0.0, 0.0, 1024.0, 1024.0)
    assert g.adm_branch_time_ids(1024, 1024, progress=0.29, **kwargs)[0][0] == 1536.0
    consistent = (1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0)
    assert g.adm_branch_time_ids(1024, 1024, progress=0.3, **kwargs) == (consistent, consistent)
    assert g.adm_branch_time_ids(1024, 1024, progress=0.9, **kwargs) == (consistent, consistent)


def test_adm_disabled_by_1_1_0() -> None:
    consistent = g.adm_consistent_ids(896, 1152)
    for progress in (0.0, 0.5, 1.0):
        off = g.adm_branch_time_ids(896, 1152, positive_scale=1.0, negative_scale=1.0, end=0.0, progress=progress)
        assert off == (consistent, consistent)
    # scales 1/1 with a non-zero end also give plain ids on multiple-of-64 sizes
    on = g.adm_branch_time_ids(896, 1152, positive_scale=1.0, negative_scale=1.0, end=0.3, progress=0.0)
    assert on == (consistent, consistent)


def test_adm_end_threshold_matches_fooocus_timestep_rule() -> None:
    # Fooocus: emphasised while t > 999 * (1 - end); with end 0.3 that is t > 699.3
    for t in (999, 900, 700, 699.4):
        assert g.adm_active(g.progress_from_timestep(t), 0.3)
    for t in (699, 500, 0):
        assert not g.adm_active(g.progress_from_timestep(t), 0.3)


def test_timed_adm_ids_tensor_switch() -> None:
    emphasized = torch.tensor([g.adm_time_ids(64, 64, 0.8), g.adm_time_ids(64, 64, 1.5)], dtype=torch.float16)
    consistent = torch.tensor([g.adm_consistent_ids(64, 64)] * 2, dtype=torch.float16)
    early = g.timed_adm_ids(emphasized, consistent, torch.tensor(0.1), 0.3)
    late = g.timed_adm_ids(emphasized, consistent, torch.tensor(0.5), 0.3)
    assert torch.equal(early, emphasized) and early.dtype == torch.float16
    assert torch.equal(late, consistent)
    assert g.timed_adm_ids(emphasized, consistent, 0.1, 0.3) is emphasized
