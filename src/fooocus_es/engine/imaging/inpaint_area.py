"""Fooocus's inpaint area: the crop around the mask, its diffusion-size copy, the fill and the paste-back.

Source: Fooocus 2.5 modules/inpaint_worker.py (compute_initial_abcd, solve_abcd, fooocus_fill,
morphological_open, InpaintWorker.__init__ / post_process / color_correction).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NamedTuple

import numpy as np
from PIL import Image, ImageFilter

from fooocus_es.engine.imaging.morphology import THRESHOLD, binarize, feather
from fooocus_es.engine.imaging.resample import resample_image
from fooocus_es.engine.imaging.sizes import SR_SCALE, get_shape_ceil, shape_ceil_size, snap_size

INPAINT_SHAPE_CEIL: Final = 1024
BOX_GROWTH: Final = 1.15  # compute_initial_abcd: square around the mask, half-side * 1.15
FILL_THRESHOLD: Final = 0.99  # use_fill = strength > 0.99
# fooocus_fill: (box blur radius, repeats), coarse to fine; unmasked pixels are restored after each blur.
FILL_SCHEDULE: Final = ((512, 2), (256, 2), (128, 4), (64, 4), (33, 8), (15, 8), (5, 16), (3, 16))

Upscaler = Callable[[np.ndarray], np.ndarray]


class EmptyMaskError(ValueError):
    """The mask selects nothing, so there is no inpaint area."""


class CropBox(NamedTuple):
    """Fooocus's (a, b, c, d): rows top:bottom, columns left:right, end-exclusive."""

    top: int
    bottom: int
    left: int
    right: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    def crop(self, array: np.ndarray) -> np.ndarray:
        return array[self.top : self.bottom, self.left : self.right]


def _clip_box(top: int, bottom: int, left: int, right: int, height: int, width: int) -> CropBox:
    # regulate_abcd
    return CropBox(min(max(top, 0), height), min(max(bottom, 0), height), min(max(left, 0), width),
                   min(max(right, 0), width))  # fmt: skip


def initial_box(mask: np.ndarray) -> CropBox:
    """compute_initial_abcd(mask > 0): a square on the mask's bounding box centre, 1.15x its half-side."""
    rows, cols = np.nonzero(np.any(mask > 0, axis=1))[0], np.nonzero(np.any(mask > 0, axis=0))[0]
    if rows.size == 0:
        raise EmptyMaskError("the inpaint mask is empty")
    a, b, c, d = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])  # b, d inclusive here
    row_centre, col_centre = (b + a) // 2, (d + c) // 2
    half = int(max((b - a) // 2, (d - c) // 2) * BOX_GROWTH)
    return _clip_box(row_centre - half, row_centre + half + 1, col_centre - half, col_centre + half + 1,
                     *mask.shape[:2])  # fmt: skip


def solve_box(box: CropBox, height: int, width: int, k: float) -> CropBox:
    """solve_abcd: grow the box one pixel per side per step (the shorter side first) until it covers
    at least k x the image height and k x the image width; k == 1 is the whole image."""
    k = float(k)
    if not 0.0 <= k <= 1.0:
        raise ValueError(f"respective field must be within 0..1, got {k}")
    if k == 1.0:
        return CropBox(0, height, 0, width)
    a, b, c, d = box
    while not (b - a >= height * k and d - c >= width * k):
        add_h = (b - a) < (d - c)
        add_w = not add_h
        if b - a == height:
            add_w = True
        if d - c == width:
            add_h = True
        if add_h:
            a, b = a - 1, b + 1
        if add_w:
            c, d = c - 1, d + 1
        a, b, c, d = _clip_box(a, b, c, d, height, width)
    return CropBox(a, b, c, d)


def inpaint_crop_box(mask: np.ndarray, respective_field: float) -> CropBox:
    """The interested area of InpaintWorker for a mask and inpaint_respective_field."""
    height, width = mask.shape[:2]
    return solve_box(initial_box(mask), height, width, respective_field)


def crop_diffusion_size(width: int, height: int, sr_scale: int = SR_SCALE) -> tuple[int, int, bool]:
    """(width, height, needs_sr) of the crop for diffusion: SR first when its shape ceil is under 1024
    (then the size is derived from the SR output's size), then set_image_shape_ceil(..., 1024)."""
    needs_sr = get_shape_ceil(height, width) < INPAINT_SHAPE_CEIL
    if needs_sr:
        width, height = width * sr_scale, height * sr_scale
    new_width, new_height = shape_ceil_size(width, height, INPAINT_SHAPE_CEIL)
    return new_width, new_height, needs_sr


def _box_blur(image: np.ndarray, radius: int) -> np.ndarray:
    return np.array(Image.fromarray(image).filter(ImageFilter.BoxBlur(radius)))


def fooocus_fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fill the masked area with its blurred surroundings: repeated PIL box blurs, coarse to fine,
    restoring the unmasked pixels (mask < 127) after each one."""
    keep = mask < THRESHOLD
    current = image.copy()
    rows, cols = np.nonzero(~keep.all(axis=1))[0], np.nonzero(~keep.all(axis=0))[0]
    if rows.size == 0:
        return current
    height, width = mask.shape[:2]
    for radius, repeats in FILL_SCHEDULE:
        # Only masked pixels keep their blurred value, and an integer-radius box blur reads exactly
        # `radius` pixels each way, so blurring the mask's bounding box + radius is bit-identical.
        top, bottom = max(0, rows[0] - radius), min(height, rows[-1] + radius + 1)
        left, right = max(0, cols[0] - radius), min(width, cols[-1] + radius + 1)
        window = current[top:bottom, left:right]
        original, window_keep = image[top:bottom, left:right], keep[top:bottom, left:right, None]
        for _ in range(repeats):
            window = _box_blur(window, radius)
            np.copyto(window, original, where=window_keep)
        current[top:bottom, left:right] = window
    return current


def blend(foreground: np.ndarray, background: np.ndarray, soft_mask: np.ndarray) -> np.ndarray:
    """color_correction: fg * w + bg * (1 - w) with w = soft_mask / 255, floored like Fooocus's astype.

    Integer arithmetic, so w == 0 (or fg == bg) leaves the background bit-identical.
    """
    bg = background.astype(np.int32)
    weight = soft_mask.astype(np.int32)[:, :, None]
    mixed = bg + ((foreground.astype(np.int32) - bg) * weight) // 255
    return mixed.astype(np.uint8)


@dataclass(frozen=True)
class InpaintJob:
    """Everything the diffusion pass and the paste-back need.

    crop_image / crop_mask / crop_fill share the diffusion size (crop_width x crop_height, snapped to a
    multiple). crop_fill is the Fooocus fill when strength > 0.99, else a copy of crop_image.
    """

    image: np.ndarray  # HxWx3, the full (possibly outpainted) input
    mask: np.ndarray  # HxW binary mask the crop was made for
    soft_mask: np.ndarray  # HxW feathered mask used when pasting back
    box: CropBox
    crop_image: np.ndarray
    crop_mask: np.ndarray
    crop_fill: np.ndarray
    needs_super_resolution: bool  # Fooocus runs its SR model on crops under a 1024 shape ceil
    super_resolved: bool  # an upscaler was given and applied

    @property
    def crop_size(self) -> tuple[int, int]:
        return self.crop_image.shape[1], self.crop_image.shape[0]


def prepare_inpaint(
    image: np.ndarray,
    mask: np.ndarray,
    respective_field: float = 0.618,
    strength: float = 1.0,
    upscaler: Upscaler | None = None,
    sr_scale: int = SR_SCALE,
    multiple: int = 8,
) -> InpaintJob:
    """InpaintWorker.__init__: crop box, diffusion-size crop (SR'd by `upscaler` when Fooocus would),
    binarised crop mask, fill, and the feathered full-size mask.

    The diffusion size is Fooocus's (as if its `sr_scale` x model ran), snapped to `multiple`; Fooocus
    would centre-crop a non-multiple-of-8 size in its VAE instead.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be HxWx3 uint8, got {image.shape} {image.dtype}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match image {image.shape[:2]}")
    binary = binarize(mask)
    box = inpaint_crop_box(binary, respective_field)
    crop = box.crop(image)
    width, height, needs_sr = crop_diffusion_size(box.width, box.height, sr_scale)
    width, height = snap_size(width, height, multiple)
    super_resolved = needs_sr and upscaler is not None
    source = upscaler(crop) if super_resolved else crop
    crop_image = resample_image(source, width, height)
    crop_mask = binarize(resample_image(box.crop(binary), width, height))
    crop_fill = fooocus_fill(crop_image, crop_mask) if strength > FILL_THRESHOLD else crop_image.copy()
    return InpaintJob(image, binary, feather(binary), box, crop_image, crop_mask, crop_fill, needs_sr, super_resolved)


def paste_back(job: InpaintJob, generated: np.ndarray) -> np.ndarray:
    """post_process: resample the generated crop to the box, paste it, blend by the feathered mask."""
    if generated.ndim != 3 or generated.shape[2] != 3:
        raise ValueError(f"generated crop must be HxWx3, got {generated.shape}")
    box = job.box
    pasted = job.image.copy()
    pasted[box.top : box.bottom, box.left : box.right] = resample_image(generated, box.width, box.height)
    return blend(pasted, job.image, job.soft_mask)
