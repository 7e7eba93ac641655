"""Aspect ratios: Fooocus's SDXL list and parsing of any `W*H` (pure)."""

from __future__ import annotations

import re
from typing import Final

ASPECT_RATIOS: Final = (
    "704*1408", "704*1344", "768*1344", "768*1280", "832*1216", "832*1152", "896*1152", "896*1088",
    "960*1088", "960*1024", "1024*1024", "1024*960", "1088*960", "1088*896", "1152*896", "1152*832",
    "1216*832", "1280*768", "1344*768", "1344*704", "1408*704", "1472*704", "1536*640", "1600*640",
    "1664*576", "1728*576",
)  # fmt: skip

MIN_SIDE: Final = 64
MAX_SIDE: Final = 4096

# Accepts "1152*896", "1152×896" and the UI label "1152×896 | 9:7".
_PATTERN = re.compile(r"^\s*(\d{2,5})\s*[*×xX]\s*(\d{2,5})")


class AspectRatioError(ValueError):
    pass


def parse_aspect_ratio(value: str) -> tuple[int, int]:
    match = _PATTERN.match(value)
    if not match:
        raise AspectRatioError(f"expected 'W*H' such as '1152*896', got {value!r}")
    width, height = int(match.group(1)), int(match.group(2))
    for side in (width, height):
        if not MIN_SIDE <= side <= MAX_SIDE:
            raise AspectRatioError(f"each side must be within {MIN_SIDE}..{MAX_SIDE}, got {value!r}")
    return width, height


def snap8(side: int) -> int:
    """SDXL's VAE works on multiples of 8: round down, never below the minimum."""
    return max(MIN_SIDE, side - side % 8)


def resolve_size(aspect_ratio: str, overwrite_width: int = -1, overwrite_height: int = -1) -> tuple[int, int]:
    width, height = parse_aspect_ratio(aspect_ratio)
    if overwrite_width > 0:
        width = overwrite_width
    if overwrite_height > 0:
        height = overwrite_height
    return snap8(width), snap8(height)
