"""ControlNet residuals for one UNet call, Fooocus's way: softness, weight, summed over controls.

`GuidedUNet` calls `control_residuals` with the very arguments it passes the UNet (the ADM-modified
`added_cond_kwargs` included) and hands the result to the UNet as `down_block_additional_residuals`
and `mid_block_additional_residual`, which add onto the skip connections as Comfy's output/middle
controls do. Every row (cond and uncond alike) gets the hint with its own context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

LATENT_SCALE: Final = 8  # hint pixels per latent pixel (the SDXL VAE's factor)


@dataclass(frozen=True, eq=False)
class ActiveControl:
    """One ControlNet image of a task: the model, its hint [1, 3, H, W] in [0, 1] RGB at latent×8 size,
    Fooocus's cn_weight and softness (Fooocus's default 0.25)."""

    model: torch.nn.Module
    hint: Tensor
    weight: float
    softness: float = 0.25
    # (height, width, batch, dtype, device) -> the hint batch for that call; a task sees one or two sizes.
    _batches: dict[tuple[object, ...], Tensor] = field(default_factory=dict, init=False, repr=False)

    def hint_batch(self, sample: Tensor) -> Tensor:
        """The hint at `sample`'s size ×8, repeated to its batch, on its device in the model's dtype."""
        height, width = sample.shape[-2] * LATENT_SCALE, sample.shape[-1] * LATENT_SCALE
        dtype = getattr(self.model, "dtype", sample.dtype)
        key = (height, width, sample.shape[0], dtype, sample.device)
        if key not in self._batches:
            hint = fit_hint(self.hint, height, width).to(device=sample.device, dtype=dtype)
            self._batches[key] = hint.expand(sample.shape[0], -1, -1, -1).contiguous()
        return self._batches[key]


def fit_hint(hint: Tensor, height: int, width: int) -> Tensor:
    """`hint` [N, C, h, w] at height×width: centre-cropped to that aspect ratio, then scaled nearest-exact
    (Comfy's upscale for hints of another size). Returned as is when it already fits."""
    h, w = hint.shape[-2:]
    if (h, w) == (height, width):
        return hint
    if w * height > width * h:  # wider than the target: keep the height, crop the sides
        crop = round(h * width / height)
        left = (w - crop) // 2
        hint = hint[..., :, left : left + crop]
    elif w * height < width * h:  # taller: crop top and bottom
        crop = round(w * height / width)
        top = (h - crop) // 2
        hint = hint[..., top : top + crop, :]
    return F.interpolate(hint, size=(height, width), mode="nearest-exact")


def soften(residuals: Sequence[Tensor], softness: float, weight: float) -> list[Tensor]:
    """Fooocus's softness then weight: outs[i] *= 1 - softness·(1 - i/n), then × weight.

    The residuals are the down ones (highest resolution first) and the mid one last; SDXL has 9 + 1,
    so n = 9. n is len(residuals) - 1 in general (the tiny demo UNet has 9 + 1 as well), so the first
    one is scaled by 1 - softness and the mid one is left alone.
    """
    n = len(residuals) - 1
    scales = [(1.0 - softness * (1.0 - i / n)) * weight if n > 0 else weight for i in range(len(residuals))]
    return [residual * scale for residual, scale in zip(residuals, scales, strict=True)]


def control_residuals(
    controls: Sequence[ActiveControl],
    sample: Tensor,
    timestep: Tensor | float | int,
    encoder_hidden_states: Tensor,
    added_cond_kwargs: dict[str, Tensor] | None,
) -> tuple[list[Tensor], Tensor] | None:
    """(down residuals, mid residual) summed over the controls with weight > 0; None when there are none.

    A weight of 0 skips the ControlNet entirely, as in Fooocus (no forward pass).
    """
    total: list[Tensor] | None = None
    for control in controls:
        if not control.weight > 0:
            continue
        down, mid = control.model(
            sample,
            timestep,
            encoder_hidden_states,
            controlnet_cond=control.hint_batch(sample),
            conditioning_scale=1.0,
            added_cond_kwargs=added_cond_kwargs,
            return_dict=False,
        )
        outs = soften([*down, mid], control.softness, control.weight)
        total = outs if total is None else [a + b for a, b in zip(total, outs, strict=True)]
    if total is None:
        return None
    return total[:-1], total[-1]
