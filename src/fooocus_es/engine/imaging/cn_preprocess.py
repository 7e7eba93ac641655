"""Fooocus's ControlNet and IP-Adapter preprocessors (image-prompts.md §2.1): pure numpy, OpenCV and PIL.

Everything takes and returns RGB uint8 H x W x 3 (HWC3 first, so gray and RGBA inputs work too).
- PyraCanny: Canny on each channel at nine scales (0.2 ... 1.0 of the working size), blended from
  coarse to fine, summed, then stretched between the 1st and 99th percentiles.
- CPDS: the input, slightly blurred, decolourised (contrast-preserving gray) plus how far the colour
  boost moved each pixel, stretched between the 4th and 96th percentiles.
- ImagePrompt / FaceSwap: a plain stretch to CLIP's 224 x 224 (no aspect ratio kept, as Fooocus).
"""

from __future__ import annotations

from typing import Final

import cv2
import numpy as np
from PIL import Image

IP_SIZE: Final = 224
PYRAMID_SCALES: Final = tuple(k / 10 for k in range(2, 11))  # 0.2, 0.3, ..., 1.0
CPDS_BLUR_SIGMA: Final = 0.8


def hwc3(image: np.ndarray) -> np.ndarray:
    """`image` as H x W x 3 uint8: gray repeated, RGBA composited over white."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = image[:, :, None]
    channels = image.shape[2]
    if channels == 3:
        return image
    if channels == 1:
        return np.repeat(image, 3, axis=2)
    if channels == 4:
        color = image[:, :, :3].astype(np.float32)
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        return np.clip(color * alpha + 255.0 * (1.0 - alpha), 0, 255).round().astype(np.uint8)
    raise ValueError(f"an image needs 1, 3 or 4 channels, got {channels}")


def resize_image(image: np.ndarray, width: int, height: int, mode: int) -> np.ndarray:
    """Mode 0: stretch to width x height. Mode 1: scale to cover width x height, then centre-crop. LANCZOS."""
    image = hwc3(image)
    if mode == 0:
        return _lanczos(image, width, height)
    if mode != 1:
        raise ValueError(f"resize mode must be 0 (stretch) or 1 (cover and crop), got {mode}")
    raw_h, raw_w = image.shape[:2]
    if width * raw_h > height * raw_w:  # the target is wider: fit the width, crop top and bottom
        scaled_w, scaled_h = width, max(height, round(raw_h * width / raw_w))
    else:
        scaled_w, scaled_h = max(width, round(raw_w * height / raw_h)), height
    scaled = _lanczos(image, scaled_w, scaled_h)
    top, left = (scaled_h - height) // 2, (scaled_w - width) // 2
    return np.ascontiguousarray(scaled[top : top + height, left : left + width])


def _lanczos(image: np.ndarray, width: int, height: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))


def norm255(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Stretch `values` so the `low` percentile maps to 0 and the `high` one to 255; clipped, uint8."""
    values = values.astype(np.float32)
    v_low, v_high = np.percentile(values, low), np.percentile(values, high)
    spread = max(float(v_high - v_low), 1e-5)  # a flat image stays flat (0) instead of dividing by zero
    return np.clip((values - v_low) / spread * 255.0, 0, 255).astype(np.uint8)


def canny_pyramid(image: np.ndarray, low: int = 64, high: int = 128) -> np.ndarray:
    """Pyramid Canny: per-channel edges at nine scales, blended coarse to fine (acc·0.75 + edges·0.25)."""
    image = hwc3(image)
    height, width = image.shape[:2]
    acc: np.ndarray | None = None
    for k in PYRAMID_SCALES:
        size = (max(1, int(width * k)), max(1, int(height * k)))
        scaled = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        edges = np.stack([cv2.Canny(scaled[:, :, c], low, high) for c in range(3)], axis=2).astype(np.float32) / 255
        if acc is None:
            acc = edges
        else:
            acc = cv2.resize(acc, size, interpolation=cv2.INTER_LINEAR)
            acc = acc * 0.75 + edges * 0.25
    assert acc is not None
    return hwc3(norm255(acc.sum(axis=2), 1, 99))


def cpds(image: np.ndarray) -> np.ndarray:
    """CPDS: decolourised gray plus the distance to the colour boost, of the slightly blurred input."""
    raw = cv2.GaussianBlur(hwc3(image), (0, 0), CPDS_BLUR_SIGMA)
    bgr = np.ascontiguousarray(raw[:, :, ::-1])
    gray, boost = cv2.decolor(bgr)
    shift = np.linalg.norm(bgr.astype(np.float32) - boost.astype(np.float32), axis=2)
    return hwc3(norm255(gray.astype(np.float32) + shift, 4, 96))


def ip_input(image: np.ndarray) -> np.ndarray:
    """What CLIP vision encodes: the image stretched to 224 x 224."""
    return resize_image(image, IP_SIZE, IP_SIZE, 0)


def control_hint(
    cn_type: str, image: np.ndarray, width: int, height: int, *, canny_low: int, canny_high: int, skip: bool
) -> np.ndarray:
    """A ControlNet's hint at width x height: the input covered and cropped, then its preprocessor unless `skip`."""
    if cn_type not in ("PyraCanny", "CPDS"):
        raise ValueError(f"{cn_type} is not a ControlNet image prompt type (PyraCanny, CPDS)")
    fitted = resize_image(image, width, height, 1)
    if skip:
        return fitted
    return canny_pyramid(fitted, canny_low, canny_high) if cn_type == "PyraCanny" else cpds(fitted)
