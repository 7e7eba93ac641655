"""Fooocus's guidance extras as small pure tensor functions: CFG, adaptive CFG, sharpness, ADM.

Everything here works in the noise (epsilon) space of a DDPM-discretised model (SDXL and every
Fooocus sampler but EDM). Fooocus does its maths on k-diffusion's `x - denoised`, which is
`sigma * eps`; every operation below is linear in eps for a fixed guide (the bilateral weights
depend only on the guide), so working on eps itself gives the same result.

Conventions:
- `progress` is Fooocus's "global diffusion progress" `1 - t / 999`: 0 at the noisiest step, 1 at
  the cleanest. It may be a Python float or a tensor (0-d, or one value per batch item), so that a
  caller on the GPU never has to read the timestep back to the host.
- Functions never modify their inputs and return a tensor of the input's dtype and device; the
  filter computes in float32 (its exp and normalisation are fragile in float16) and casts back.
- Shortcuts that return the input unchanged (cfg at 1, sharpness 0) are exact, so "extras off" is
  bit-identical to plain diffusers.
"""

from __future__ import annotations

import math
from typing import Final

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
Progress = float | Tensor
AdmIds = tuple[
    float, float, float, float, float, float
]  # SDXL add_time_ids row: orig h, w, crop top, left, target h, w

# Fooocus's published filter constants (modules/anisotropic.py: 13x13 window, both sigmas 3, L1 range).
FILTER_KERNEL_SIZE: Final = 13
FILTER_SIGMA_SPACE: Final = 3.0
FILTER_SIGMA_COLOR: Final = 3.0
SHARPNESS_UNIT: Final = 0.001  # alpha = 0.001 * sharpness * progress


# -- progress ------------------------------------------------------------------------------------


def progress_from_timestep(t: float | Tensor, num_train_timesteps: int = 1000) -> Progress:
    """Fooocus's diffusion progress `clamp(1 - t / (N - 1), 0, 1)`; N - 1 = 999 for SDXL.

    A tensor `t` gives a float32 tensor on its device (no host sync); a number gives a float.
    Fractional `t` (Euler with Karras sigmas) is fine.
    """
    last = float(num_train_timesteps - 1)
    if isinstance(t, Tensor):
        return (1.0 - t.to(torch.float32) / last).clamp(0.0, 1.0)
    return min(1.0, max(0.0, 1.0 - float(t) / last))


def _weight(value: Progress, like: Tensor) -> Progress:
    """A per-sample weight that broadcasts over `like` (B, C, H, W): floats stay floats."""
    if not isinstance(value, Tensor):
        return value
    value = value.to(device=like.device)
    if value.ndim == 1 and value.numel() > 1:
        return value.view(-1, *([1] * (like.ndim - 1)))
    return value.reshape(())


# -- CFG and adaptive CFG ------------------------------------------------------------------------


def cfg(cond: Tensor, uncond: Tensor | None, scale: float) -> Tensor:
    """Classifier-free guidance `uncond + scale * (cond - uncond)`, the expression diffusers uses.

    At scale 1 (Lightning, LCM, Hyper-SD) Fooocus never runs the unconditional pass: `cond` is
    returned as it is, and `uncond` may be None.
    """
    if math.isclose(scale, 1.0):
        return cond
    if uncond is None:
        raise ValueError(f"guidance scale {scale} needs the unconditional prediction")
    return uncond + scale * (cond - uncond)


def adaptive_cfg(cond: Tensor, uncond: Tensor, scale: float, mimic_scale: float, progress: Progress) -> Tensor:
    """Fooocus's "CFG mimicking from TSNR": `real * p + mimic * (1 - p)`.

    `real` is CFG at `scale`, `mimic` CFG at `mimic_scale` (the `adaptive_cfg` parameter), and
    `p` the diffusion progress, so early noisy steps follow the milder scale and the full scale
    takes over at the end. When `scale <= mimic_scale` this is plain CFG, bit for bit.
    """
    real = cfg(cond, uncond, scale)
    if scale <= mimic_scale:
        return real
    mimic = cfg(cond, uncond, mimic_scale)
    p = _weight(progress, real)
    return (real * p + mimic * (1 - p)).to(real.dtype)  # a per-sample float32 p would promote float16


# -- sharpness (anisotropic filter) --------------------------------------------------------------


def _gaussian_window(size: int, sigma: float, device: torch.device) -> Tensor:
    """Normalised 2-D Gaussian (outer product of two 1-D ones), flattened to size*size weights."""
    offsets = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    line = torch.exp(-(offsets**2) / (2.0 * sigma**2))
    line = line / line.sum()
    return (line[:, None] * line[None, :]).reshape(-1)


def anisotropic_filter(
    x: Tensor,
    guide: Tensor | None = None,
    *,
    kernel_size: int = FILTER_KERNEL_SIZE,
    sigma_space: float = FILTER_SIGMA_SPACE,
    sigma_color: float = FILTER_SIGMA_COLOR,
    rows_per_pass: int | None = None,
) -> Tensor:
    """Edge-preserving (joint bilateral) smoothing of `x` (B, C, H, W), with edges taken from `guide`.

    The guide is standardised per sample, `(g - mean) / (std + 1e-5)` over (C, H, W), so only its
    shape matters, not its scale. Each output pixel is the weighted mean over a k x k window:

        w(p, q) = G_space(p - q) * exp(-0.5 * (sum_c |g_c(p) - g_c(q)|)^2 / sigma_color^2)
        y(p)    = sum_q w(p, q) x(q) / sum_q w(p, q)

    with reflect padding at the borders (replicate when the image is smaller than the radius).
    Across an edge of the guide the range term is small (a 2-std step in all 4 latent channels:
    exp(-0.5 * 8^2 / 9) ~ 0.03), so edges survive while flat regions are averaged. The weights
    sum to 1: a constant image passes through unchanged.

    `rows_per_pass` window rows are evaluated per pass: all k at once suits a GPU (a dozen
    kernels over B*C*H*W*k*k elements), one row at a time suits a CPU's caches (several times
    faster there). The default picks by device; results agree to float32 rounding.
    """
    if x.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    g = x if guide is None else guide
    if g.shape[0] != x.shape[0] or g.shape[2:] != x.shape[2:]:
        raise ValueError(f"guide shape {tuple(g.shape)} does not match input {tuple(x.shape)}")
    k = kernel_size
    rows = rows_per_pass or (1 if x.device.type == "cpu" else k)
    xf = x.to(torch.float32)
    gf = g.to(device=x.device, dtype=torch.float32)
    std, mean = torch.std_mean(gf, dim=(1, 2, 3), keepdim=True)
    gn = (gf - mean) / (std + 1e-5)

    r = k // 2
    height = x.shape[2]
    mode = "reflect" if min(x.shape[2], x.shape[3]) > r else "replicate"
    x_pad = F.pad(xf, (r, r, r, r), mode=mode)
    g_pad = F.pad(gn, (r, r, r, r), mode=mode)
    space = _gaussian_window(k, sigma_space, x.device).view(k, k)
    centre = gn.unsqueeze(-1)
    numerator = torch.zeros_like(xf)
    denominator = torch.zeros_like(xf[:, :1])
    for top in range(0, k, rows):
        n = min(rows, k - top)
        # (B, C, H, W, n*k) windows as strided views of the padded tensors; only the products allocate.
        x_win = x_pad[:, :, top : top + height + n - 1].unfold(2, n, 1).unfold(3, k, 1).flatten(-2)
        g_win = g_pad[:, :, top : top + height + n - 1].unfold(2, n, 1).unfold(3, k, 1).flatten(-2)
        distance = (g_win - centre).abs().sum(dim=1, keepdim=True)  # L1 over channels: (B, 1, H, W, n*k)
        weights = torch.exp(distance.square() * (-0.5 / sigma_color**2)) * space[top : top + n].reshape(-1)
        numerator += (x_win * weights).sum(-1)
        denominator += weights.sum(-1)
    return (numerator / denominator).to(x.dtype)


def sharpness_alpha(sharpness: float, progress: Progress) -> Progress:
    """Blend weight of the filtered prediction: `alpha = 0.001 * sharpness * progress`."""
    return SHARPNESS_UNIT * sharpness * progress


def sharpen_eps(eps: Tensor, x0: Tensor, sharpness: float, progress: Progress) -> Tensor:
    """Fooocus's anisotropic sharpness, applied to the positive (conditional) noise prediction.

        eps' = alpha * anisotropic_filter(eps, guide=x0) + (1 - alpha) * eps

    `x0` is the clean image predicted from this `eps` (any positive scale and offset of it gives
    the same result, the guide is standardised). Smoothing the noise prediction along the
    predicted image's edges leaves more texture in the final image. The weight grows with
    progress, so the effect is strongest in the last steps. Sharpness 0 returns `eps` itself.
    """
    if sharpness == 0:
        return eps
    alpha = _weight(sharpness_alpha(sharpness, progress), eps)
    filtered = anisotropic_filter(eps, x0).to(torch.float32)
    return (filtered * alpha + eps.to(torch.float32) * (1 - alpha)).to(eps.dtype)


# -- noise-schedule conversions (what a UNet hook needs to feed the functions above) -------------


def alpha_bar_at(t: Tensor, alphas_cumprod: Tensor) -> Tensor:
    """The schedule's cumulative alpha at (possibly fractional) timestep `t`, float32 on `t`'s device.

    Fractional timesteps (Euler with Karras sigmas) are interpolated linearly in log sigma,
    the inverse of how diffusers and k-diffusion turn sigmas into timesteps.
    """
    acp = alphas_cumprod.to(device=t.device, dtype=torch.float32)
    log_sigmas = 0.5 * torch.log((1 - acp) / acp)
    tf = t.to(torch.float32).clamp(0, acp.numel() - 1)
    low = tf.floor().long()
    high = (low + 1).clamp(max=acp.numel() - 1)
    frac = tf - low.to(torch.float32)
    log_sigma = (1 - frac) * log_sigmas[low] + frac * log_sigmas[high]
    return 1.0 / (1.0 + torch.exp(2.0 * log_sigma))


def _bcast(alpha_bar: Tensor, like: Tensor) -> Tensor:
    return alpha_bar.to(device=like.device, dtype=torch.float32).reshape(-1, *([1] * (like.ndim - 1)))


def predicted_x0(sample: Tensor, eps: Tensor, alpha_bar: Tensor) -> Tensor:
    """Clean latent from a noisy (variance-preserving) `sample` and its eps: `(x_t - sqrt(1-a) eps) / sqrt(a)`."""
    a = _bcast(alpha_bar, eps)
    return ((sample.to(torch.float32) - (1 - a).sqrt() * eps.to(torch.float32)) / a.sqrt()).to(eps.dtype)


def eps_from_v(sample: Tensor, v: Tensor, alpha_bar: Tensor) -> Tensor:
    """Epsilon from a v-prediction: `sqrt(a) v + sqrt(1-a) x_t`."""
    a = _bcast(alpha_bar, v)
    return (a.sqrt() * v.to(torch.float32) + (1 - a).sqrt() * sample.to(torch.float32)).to(v.dtype)


def v_from_eps(sample: Tensor, eps: Tensor, alpha_bar: Tensor) -> Tensor:
    """The inverse of `eps_from_v`: `(eps - sqrt(1-a) x_t) / sqrt(a)`."""
    a = _bcast(alpha_bar, eps)
    return ((eps.to(torch.float32) - (1 - a).sqrt() * sample.to(torch.float32)) / a.sqrt()).to(eps.dtype)


# -- ADM (SDXL size conditioning) ----------------------------------------------------------------


def round_to_64(value: float) -> int:
    """Nearest multiple of 64 (Python's round: halves go to the even multiple), as Fooocus does."""
    return int(round(float(value) / 64.0)) * 64


def adm_time_ids(height: int, width: int, scale: float = 1.0) -> AdmIds:
    """SDXL `add_time_ids` with the "original size" scaled: `(int(h*s), int(w*s), 0, 0, r64(h), r64(w))`.

    Fooocus reads a scaled original size as "the source image was this large" (1.5: a high-res
    source, 0.8: a low-res one). The crop is always (0, 0); the target is the real size rounded to 64.
    """
    return (float(int(height * scale)), float(int(width * scale)), 0.0, 0.0,
            float(round_to_64(height)), float(round_to_64(width)))  # fmt: skip


def adm_consistent_ids(height: int, width: int) -> AdmIds:
    """The plain conditioning used once ADM ends: original size = target size = real size rounded to 64."""
    h, w = float(round_to_64(height)), float(round_to_64(width))
    return (h, w, 0.0, 0.0, h, w)


def adm_active(progress: Progress, end: float) -> bool | Tensor:
    """Whether the emphasised ids apply: `progress < end` (Fooocus: `t > 999 * (1 - end)`). end 0: never."""
    return progress < end


def adm_branch_time_ids(
    height: int,
    width: int,
    *,
    positive_scale: float,
    negative_scale: float,
    end: float,
    progress: float,
) -> tuple[AdmIds, AdmIds]:
    """`(cond_ids, uncond_ids)` for one step: the scaled ids while `progress < end`, consistent ones after.

    With 1.0 / 1.0 / 0.0 both branches always get the consistent ids: ADM is off.
    """
    if adm_active(progress, end):
        return adm_time_ids(height, width, positive_scale), adm_time_ids(height, width, negative_scale)
    consistent = adm_consistent_ids(height, width)
    return consistent, consistent


def timed_adm_ids(emphasized: Tensor, consistent: Tensor, progress: Progress, end: float) -> Tensor:
    """Tensor form of the ADM switch for a hook on the GPU: `where(progress < end, emphasized, consistent)`.

    `emphasized` and `consistent` are time-id rows of the same shape; `progress` may stay on the device.
    """
    active = adm_active(progress, end)
    if not isinstance(active, Tensor):
        return emphasized if active else consistent
    return torch.where(active.to(emphasized.device).reshape(-1, 1), emphasized, consistent)
