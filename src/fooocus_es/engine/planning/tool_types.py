"""Fooocus's tools as typed requests (FooocusAPI `/v1/tools/describe-image`, `/v1/tools/generate_mask`,
and the mask half of each enhance control). Pure data: the API validates into these, the runner's
engine answers them.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

DescribeType = Literal["Photo", "Anime"]
MaskModel = Literal[
    "u2net", "u2netp", "u2net_human_seg", "u2net_cloth_seg", "silueta", "isnet-general-use", "isnet-anime", "sam"
]
MASK_MODELS: Final[tuple[str, ...]] = MaskModel.__args__  # type: ignore[attr-defined]
ClothCategory = Literal["full", "upper", "lower"]
SamModel = Literal["vit_b", "vit_l", "vit_h"]


class DescribeRequest(msgspec.Struct, frozen=True, kw_only=True):
    image_type: DescribeType = "Photo"
    seed: int = 0  # Fooocus samples BLIP unseeded; we seed it so one image always gives one caption


class MaskOptions(msgspec.Struct, frozen=True, kw_only=True):
    """FooocusAPI's GenerateMaskRequest less the image, with its defaults."""

    mask_model: MaskModel = "isnet-general-use"
    cloth_category: ClothCategory = "full"
    dino_prompt_text: str = ""
    sam_model: SamModel = "vit_b"
    box_threshold: float = 0.3
    text_threshold: float = 0.25  # only GroundingDINO's phrase labels use it: it never changes the mask
    sam_max_detections: int = 0  # 0: every detection
    dino_erode_or_dilate: int = 0  # px each box grows (negative: shrinks), -64..64
    dino_debug: bool = False  # the boxes, filled white on black, instead of SAM's masks
