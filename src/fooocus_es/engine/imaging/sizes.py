"""Fooocus's size and strength rules for Vary and Upscale (pure numbers, plus two array helpers).

Sources: `modules/util.py` (get_shape_ceil, set_image_shape_ceil) and `modules/async_worker.py`
(apply_vary, apply_upscale) of Fooocus 2.5 / FooocusAPI. A "shape ceil" is sqrt(H*W) rounded up to a
multiple of 64: Fooocus sizes images by their geometric-mean side, not by their long side.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

from fooocus_es.engine.imaging.resample import resample_image

SHAPE_STEP: Final = 64
VARY_MIN_CEIL: Final = 1024
VARY_MAX_CEIL: Final = 2048
UPSCALE_MIN_CEIL: Final = 1024
SUPER_LARGE_CEIL: Final = 2800  # above this the SR image is returned without diffusion
SR_SCALE: Final = 4  # Fooocus's SR model (fooocus_upscaler_s409985e5.bin) is a 4x ESRGAN
VARY_SUBTLE_STRENGTH: Final = 0.5
VARY_STRONG_STRENGTH: Final = 0.85
UPSCALE_STRENGTH: Final = 0.382
UPSCALE_MIN_FACTOR: Final = 1.0
UPSCALE_MAX_FACTOR: Final = 5.0
UPSCALE_CUSTOM: Final = "Upscale (Custom)"  # FooocusAPI only; sent to Fooocus as "Upscale ({x}x)"

_FACTOR_PATTERN: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)x")


def get_shape_ceil(height: float, width: float) -> int:
    """sqrt(H*W) rounded up to a multiple of 64 (util.get_shape_ceil)."""
    return math.ceil(((height * width) ** 0.5) / 64.0) * SHAPE_STEP


def shape_ceil_size(width: int, height: int, shape_ceil: float) -> tuple[int, int]:
    """The (width, height) that util.set_image_shape_ceil gives an image of this size.

    Unchanged when the image already has that shape ceil (so the result need not be a multiple of 64);
    otherwise both sides are rescaled and rounded (Python's half-to-even round) to multiples of 64,
    repeated until the shape ceil matches. Sides never drop below 64 (Fooocus divides by zero there).
    """
    target = float(shape_ceil)
    h, w = int(height), int(width)
    for _ in range(256):
        current = get_shape_ceil(h, w)
        if abs(current - target) < 0.1:
            break
        k = target / current
        h = max(SHAPE_STEP, int(round(float(h) * k / 64.0) * SHAPE_STEP))
        w = max(SHAPE_STEP, int(round(float(w) * k / 64.0) * SHAPE_STEP))
    return w, h


def set_image_shape_ceil(image: np.ndarray, shape_ceil: float) -> np.ndarray:
    """Resample an image to the size shape_ceil_size gives (the same array when the size is unchanged)."""
    height, width = image.shape[:2]
    new_width, new_height = shape_ceil_size(width, height, shape_ceil)
    if (new_width, new_height) == (width, height):
        return image
    return resample_image(image, new_width, new_height)


def vae_crop_size(width: int, height: int, multiple: int = 8) -> tuple[int, int]:
    """Fooocus's VAE encode centre-crops pixels to multiples of 8, so this is its output size."""
    return width - width % multiple, height - height % multiple


def crop_to_multiple(image: np.ndarray, multiple: int = 8) -> np.ndarray:
    """Centre crop to multiples of `multiple`, with ComfyUI's offsets ((side % m) // 2)."""
    height, width = image.shape[:2]
    new_width, new_height = vae_crop_size(width, height, multiple)
    top, left = (height % multiple) // 2, (width % multiple) // 2
    return image[top : top + new_height, left : left + new_width]


def snap_size(width: int, height: int, multiple: int = 8) -> tuple[int, int]:
    """Nearest multiple of `multiple` per side (at least one multiple): a resize target for diffusers."""

    def snap(side: int) -> int:
        return max(multiple, int(round(side / multiple)) * multiple)

    return snap(width), snap(height)


def uov_goal(uov_method: str) -> Literal["vary", "upscale"] | None:
    """Which Fooocus branch a uov_method takes (substring tests on the casefolded name, as Fooocus does)."""
    method = uov_method.casefold()
    if method == "disabled":
        return None
    if "vary" in method:
        return "vary"
    if "upscale" in method:
        return "upscale"
    return None


def vary_strength(uov_method: str, overwrite_vary_strength: float = -1.0) -> float:
    """Denoise for Vary: Subtle 0.5, Strong 0.85; overwrite_vary_strength wins when > 0 (apply_vary)."""
    method = uov_method.casefold()
    if "vary" not in method:
        raise ValueError(f"not a Vary method: {uov_method!r}")
    strength = 1.0  # apply_vary starts from the handler's denoising_strength of 1.0
    if "subtle" in method:
        strength = VARY_SUBTLE_STRENGTH
    if "strong" in method:
        strength = VARY_STRONG_STRENGTH
    if overwrite_vary_strength > 0:
        strength = float(overwrite_vary_strength)
    return strength


def vary_size(width: int, height: int) -> tuple[int, int]:
    """Vary's input size: shape ceil clamped into 1024..2048, then set_image_shape_ceil (apply_vary)."""
    shape_ceil = min(max(get_shape_ceil(height, width), VARY_MIN_CEIL), VARY_MAX_CEIL)
    return shape_ceil_size(width, height, shape_ceil)


def upscale_strength(overwrite_upscale_strength: float = -1.0) -> float:
    """Denoise of the tiled img2img pass after SR: 0.382 unless overwrite_upscale_strength > 0."""
    return float(overwrite_upscale_strength) if overwrite_upscale_strength > 0 else UPSCALE_STRENGTH


def parse_upscale_factor(uov_method: str) -> float:
    """Fooocus's own parse of an upscale method string (apply_upscale), quirks included.

    '1.5x' and then '2x' are substring tests, so "Upscale (3.2x)" reads as 2.0; otherwise the first
    "<number>x" is taken and clamped to 1..5, and anything unparsable is 1.0.
    """
    method = uov_method.casefold()
    if "1.5x" in method:
        return 1.5
    if "2x" in method:
        return 2.0
    matches = _FACTOR_PATTERN.findall(method)
    if not matches:
        return 1.0
    return min(max(float(matches[0]), UPSCALE_MIN_FACTOR), UPSCALE_MAX_FACTOR)


def upscale_factor(uov_method: str, upscale_multiple: float = 1.0) -> float:
    """The upscale factor of a request: FooocusAPI's "Upscale (Custom)" uses upscale_multiple clamped to 1..5.

    Deliberately not FooocusAPI's string round trip ("Upscale (3.2x)" would hit Fooocus's '2x' substring
    test and give 2.0); the named methods go through parse_upscale_factor.
    """
    if uov_method.casefold() == UPSCALE_CUSTOM.casefold():
        multiple = float(upscale_multiple)
        if math.isnan(multiple):
            return UPSCALE_MIN_FACTOR
        return min(max(multiple, UPSCALE_MIN_FACTOR), UPSCALE_MAX_FACTOR)
    return parse_upscale_factor(uov_method)


@dataclass(frozen=True)
class UpscalePlan:
    """What apply_upscale does with an input of a given size.

    The SR output (sr_scale x the input) is resampled to (width, height). When `direct_return`, that
    image is the result; otherwise a tiled img2img pass runs on it at `strength`.
    """

    factor: float
    width: int
    height: int
    shape_ceil: int
    fast: bool
    super_large: bool
    strength: float | None

    @property
    def direct_return(self) -> bool:
        return self.fast or self.super_large


def plan_upscale(
    width: int,
    height: int,
    uov_method: str,
    upscale_multiple: float = 1.0,
    overwrite_upscale_strength: float = -1.0,
    sr_scale: int = SR_SCALE,
) -> UpscalePlan:
    """Target size, direct-return rule and strength of an upscale (apply_upscale).

    Target: int(W*f) x int(H*f) (truncated, as resample_image does); when that is under a 1024 shape
    ceil, the SR image is instead set to a 1024 shape ceil, which depends on the SR output's own size.
    """
    factor = upscale_factor(uov_method, upscale_multiple)
    shape_ceil = get_shape_ceil(height * factor, width * factor)
    if shape_ceil < UPSCALE_MIN_CEIL:
        target_width, target_height = shape_ceil_size(width * sr_scale, height * sr_scale, UPSCALE_MIN_CEIL)
        shape_ceil = UPSCALE_MIN_CEIL
    else:
        target_width, target_height = int(width * factor), int(height * factor)
    fast = "fast" in uov_method.casefold()
    super_large = shape_ceil > SUPER_LARGE_CEIL
    strength = None if fast or super_large else upscale_strength(overwrite_upscale_strength)
    return UpscalePlan(factor, target_width, target_height, shape_ceil, fast, super_large, strength)
