"""Inpaint masks from uploaded images: channel rules, resize, erode/dilate, invert, emptiness.

Fooocus / FooocusAPI (modules/async_worker.py apply_image_input): an uploaded mask is resampled to the
image size with Lanczos, its channels are averaged and the mean is thresholded at > 127. FooocusAPI
also sends the same array as the canvas mask, whose channel 0 is max-ed in, so the effective rule for
RGB is "R > 127 or mean(R, G, B) > 127". Then erode/dilate, then invert. Result: HxW uint8 in {0, 255}.

Where FooocusAPI has no rule or a broken one, this module decides:
- greyscale (2-D) masks are used as they are (FooocusAPI indexes channel 0 and fails on them);
- RGBA whose alpha is fully opaque follows the RGB rule (FooocusAPI averages alpha in as a 4th channel);
- RGBA whose colour is a single flat colour uses the alpha channel as the mask (a brush on a transparent layer);
- other RGBA is composited on black first, so transparent pixels are not masked;
- any size is accepted (FooocusAPI fails unless the mask matches the image size).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from fooocus_es.engine.imaging.morphology import THRESHOLD, binarize, erode_or_dilate
from fooocus_es.engine.imaging.resample import resample_image

__all__ = [
    "binarize",
    "empty_mask",
    "erode_or_dilate",
    "invert_mask",
    "mask_array_from_pil",
    "mask_from_upload",
    "mask_is_empty",
    "prepare_mask",
]

_AS_IS = frozenset({"L", "LA", "RGB", "RGBA"})


def mask_array_from_pil(image: Image.Image) -> np.ndarray:
    """A decoded mask file as an L/LA/RGB/RGBA uint8 array (palette, 1-bit, 16-bit, CMYK... converted)."""
    mode = image.mode
    if mode in _AS_IS:
        return np.asarray(image)
    if mode == "1":
        return np.asarray(image.convert("L"))
    if mode in ("P", "PA"):
        return np.asarray(image.convert("RGBA"))
    if mode.startswith("I"):
        # 16/32-bit integer greyscale: scale to 8 bits by the type's own range, not clip.
        data = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or data.max(initial=0) > 255 else 255.0
        return np.clip(data * (255.0 / top), 0, 255).round().astype(np.uint8)
    if mode == "F":
        return np.clip(np.asarray(image, dtype=np.float64), 0, 255).round().astype(np.uint8)
    return np.asarray(image.convert("RGB"))


def _effective(upload: np.ndarray) -> np.ndarray:
    """Reduce an upload to an HxW (grey) or HxWx3 (colour) array that the threshold rules apply to."""
    if upload.ndim == 2:
        return upload
    if upload.ndim != 3 or upload.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"unsupported mask shape {upload.shape}")
    channels = upload.shape[2]
    if channels == 1:
        return upload[:, :, 0]
    if channels == 3:
        return upload
    colour, alpha = upload[:, :, :-1], upload[:, :, -1]
    if channels == 2:
        colour = colour[:, :, 0]
    if np.all(alpha == 255):
        return colour
    flat = colour.reshape(-1, colour.shape[2] if colour.ndim == 3 else 1)
    if np.all(flat == flat[0]):
        return alpha
    weight = alpha.astype(np.float32) / 255.0
    if colour.ndim == 3:
        weight = weight[:, :, None]
    return np.round(colour.astype(np.float32) * weight).astype(np.uint8)


def mask_from_upload(upload: np.ndarray, width: int, height: int) -> np.ndarray:
    """An uploaded mask array (any size, L/LA/RGB/RGBA) as a binary HxW mask of the image's size."""
    if upload.dtype != np.uint8:
        raise ValueError(f"mask must be uint8, got {upload.dtype}")
    effective = _effective(upload)
    if effective.shape[:2] != (height, width):
        effective = resample_image(effective, width, height)
    if effective.ndim == 2:
        return binarize(effective)
    mean = effective.astype(np.float32).mean(axis=2)
    return np.where((mean > THRESHOLD) | (effective[:, :, 0] > THRESHOLD), np.uint8(255), np.uint8(0))


def empty_mask(width: int, height: int) -> np.ndarray:
    """FooocusAPI's mask when none is uploaded: all zero (only outpainting then has anything to do)."""
    return np.zeros((height, width), dtype=np.uint8)


def invert_mask(mask: np.ndarray) -> np.ndarray:
    return (255 - mask).astype(np.uint8)


def mask_is_empty(mask: np.ndarray) -> bool:
    """Nothing to inpaint: Fooocus only inpaints when np.any(mask > 127) (or outpaint is selected)."""
    return not bool(np.any(mask > THRESHOLD))


def prepare_mask(
    upload: np.ndarray | None, width: int, height: int, erode_or_dilate_k: int = 0, invert: bool = False
) -> np.ndarray:
    """Upload (or none) -> binary mask at the image size -> erode/dilate -> invert, in Fooocus's order."""
    mask = empty_mask(width, height) if upload is None else mask_from_upload(upload, width, height)
    if int(erode_or_dilate_k) != 0:
        mask = erode_or_dilate(mask, erode_or_dilate_k)
    if invert:
        mask = invert_mask(mask)
    return mask
