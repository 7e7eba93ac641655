"""Lanczos resampling of uint8 arrays, as Fooocus's `modules/util.py resample_image` does it."""

from __future__ import annotations

import numpy as np
from PIL import Image


def resample_image(image: np.ndarray, width: float, height: float) -> np.ndarray:
    """Resize an HxW or HxWxC uint8 array with PIL Lanczos; sizes are truncated with int() like Fooocus."""
    width, height = int(width), int(height)
    if width < 1 or height < 1:
        raise ValueError(f"cannot resample to {width}x{height}")
    if image.shape[1] == width and image.shape[0] == height:
        return image.copy()
    return np.array(Image.fromarray(np.ascontiguousarray(image)).resize((width, height), Image.Resampling.LANCZOS))
