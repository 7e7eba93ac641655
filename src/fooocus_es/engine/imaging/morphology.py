"""Binary morphology on HxW masks in numpy (Fooocus uses cv2 and PIL rank filters for these).

Windows are clipped at the image border, which is what cv2.dilate/erode do with their default border
(ignored pixels) and what PIL's MaxFilter does (it pads by repeating edge pixels).
"""

from __future__ import annotations

from typing import Final

import numpy as np

THRESHOLD: Final = 127
FEATHER_STEPS: Final = 32  # inpaint_worker.morphological_open: 32 rounds of 3x3 max, minus 8 each
FEATHER_DROP: Final = 8


def binarize(mask: np.ndarray, threshold: int = THRESHOLD) -> np.ndarray:
    """255 where mask > threshold, else 0 (Fooocus's up255(x, t=127))."""
    return np.where(mask > threshold, np.uint8(255), np.uint8(0))


def _dilate_axis(mask: np.ndarray, radius: int, axis: int) -> np.ndarray:
    # A running count over a clipped window: O(N) whatever the radius.
    length = mask.shape[axis]
    sums = np.cumsum(mask, axis=axis, dtype=np.int32)
    sums = np.concatenate([np.zeros_like(np.take(sums, [0], axis=axis)), sums], axis=axis)
    index = np.arange(length)
    upper = np.minimum(index + radius + 1, length)
    lower = np.maximum(index - radius, 0)
    return (np.take(sums, upper, axis=axis) - np.take(sums, lower, axis=axis)) > 0


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Boolean dilation by a (2r+1) square: the same as r rounds of a 3x3 dilation."""
    if radius <= 0 or mask.size == 0:
        return mask.astype(bool, copy=True)
    return _dilate_axis(_dilate_axis(mask.astype(bool, copy=False), radius, 1), radius, 0)


def erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Boolean erosion by a (2r+1) square; pixels outside the image do not erode (cv2's default)."""
    return ~dilate(~mask.astype(bool, copy=False), radius)


def erode_or_dilate(mask: np.ndarray, k: int) -> np.ndarray:
    """util.erode_or_dilate on a binarised mask: k > 0 dilates, k < 0 erodes, |k| rounds of a 3x3 kernel.

    Thresholding commutes with grey max/min, so binarising first gives the same binary result.
    """
    k = int(k)
    core = mask > THRESHOLD
    if k > 0:
        core = dilate(core, k)
    elif k < 0:
        core = erode(core, -k)
    return np.where(core, np.uint8(255), np.uint8(0))


def _dilate3(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    rows = out.copy()
    out[1:, :] |= rows[:-1, :]
    out[:-1, :] |= rows[1:, :]
    return out


def feather(mask: np.ndarray) -> np.ndarray:
    """inpaint_worker.morphological_open: min(255, 256 - 8 d) at Chebyshev distance d < 32 from the mask.

    255 on the mask (> 127), then 248, 240, ... down to 8 at d = 31 and 0 from d = 32 on.
    """
    core = mask > THRESHOLD
    out = np.zeros(mask.shape, dtype=np.uint8)
    rows, cols = np.nonzero(core.any(axis=1))[0], np.nonzero(core.any(axis=0))[0]
    if rows.size == 0:
        return out
    # Nothing beyond the mask's bounding box + 32 px is touched, so work on that window only.
    top, bottom = max(0, rows[0] - FEATHER_STEPS), min(mask.shape[0], rows[-1] + FEATHER_STEPS + 1)
    left, right = max(0, cols[0] - FEATHER_STEPS), min(mask.shape[1], cols[-1] + FEATHER_STEPS + 1)
    grown = core[top:bottom, left:right]
    count = np.zeros(grown.shape, dtype=np.uint16)
    for step in range(FEATHER_STEPS):
        if step:
            grown = _dilate3(grown)
        count += grown
    # count = 32 - d for d < 32, so 256 - 8 d = 8 * count.
    out[top:bottom, left:right] = np.minimum(count * FEATHER_DROP, 255).astype(np.uint8)
    return out
