"""Outpaint: grow the canvas with edge pixels and mark the new area for inpainting.

Source: FooocusAPI modules/async_worker.py apply_outpaint. Top and Bottom are padded first (each by
30% of the original height), then Left and Right (30% of the width); FooocusAPI's outpaint_distance
[left, top, right, bottom] replaces the 30% for a side when it is > 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, NamedTuple

import numpy as np

DEFAULT_FRACTION: Final = 0.3
DIRECTIONS: Final = ("left", "top", "right", "bottom")  # outpaint_distance order
OUTPAINT_STRENGTH: Final = 1.0
OUTPAINT_RESPECTIVE_FIELD: Final = 1.0


class OutpaintPads(NamedTuple):
    left: int
    top: int
    right: int
    bottom: int


def _selected(selections: Sequence[str]) -> frozenset[str]:
    chosen = frozenset(s.casefold() for s in selections)
    unknown = chosen - frozenset(DIRECTIONS)
    if unknown:
        raise ValueError(f"unknown outpaint direction(s) {sorted(unknown)}; expected Left, Top, Right, Bottom")
    return chosen


def outpaint_pads(
    width: int, height: int, selections: Sequence[str], distance: Sequence[int] = (0, 0, 0, 0)
) -> OutpaintPads:
    """Pixels added on each side: int(0.3 * side) by default, the distance instead when it is > 0."""
    chosen = _selected(selections)
    wanted = (list(distance) + [0, 0, 0, 0])[:4]
    # Top/bottom use the original height; left/right the width after top/bottom (which is unchanged).
    default = {"left": int(width * DEFAULT_FRACTION), "right": int(width * DEFAULT_FRACTION),
               "top": int(height * DEFAULT_FRACTION), "bottom": int(height * DEFAULT_FRACTION)}  # fmt: skip
    pads = []
    for name, value in zip(DIRECTIONS, wanted, strict=True):
        if name not in chosen:
            pads.append(0)
        else:
            pads.append(int(value) if int(value) > 0 else default[name])
    return OutpaintPads(*pads)


def expand_for_outpaint(
    image: np.ndarray, mask: np.ndarray, selections: Sequence[str], distance: Sequence[int] = (0, 0, 0, 0)
) -> tuple[np.ndarray, np.ndarray]:
    """Pad an HxWx3 image (edge mode) and its HxW mask (255) on the selected sides; same arrays if none."""
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape[:2]} differ in size")
    height, width = image.shape[:2]
    pads = outpaint_pads(width, height, selections, distance)
    if not any(pads):
        return image, mask
    rows, cols = (pads.top, pads.bottom), (pads.left, pads.right)
    padded_image = np.pad(image, (rows, cols, (0, 0)), mode="edge")
    padded_mask = np.pad(mask, (rows, cols), mode="constant", constant_values=255)
    return np.ascontiguousarray(padded_image), np.ascontiguousarray(padded_mask)


def outpaint_overrides(selections: Sequence[str], strength: float, respective_field: float) -> tuple[float, float]:
    """(inpaint_strength, inpaint_respective_field): both forced to 1.0 when any direction is selected.

    Fooocus 2.5's apply_outpaint sets them on the task after apply_inpaint already read them, so there
    it no longer takes effect; the forcing (Fooocus <= 2.3, the documented behaviour) is applied here.
    """
    if _selected(selections):
        return OUTPAINT_STRENGTH, OUTPAINT_RESPECTIVE_FIELD
    return strength, respective_field
