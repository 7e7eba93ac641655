"""Fooocus's tools as typed requests (FooocusAPI `/v1/tools/describe-image`, `/v1/tools/generate_mask`,
and the mask half of each enhance control). Pure data: the API validates into these, the runner's
engine answers them.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec

DescribeType = Literal["Photo", "Anime"]
MaskModel = Literal[
    "u2net", "u2netp", "u2net_human_seg", "u2net_cloth_seg", "silueta", "isnet-general-use", "isnet-anime", "sam"
]
MASK_MODELS: Final[tuple[str, ...]] = MaskModel.__args__  # type: ignore[attr-defined]
ClothCategory = Literal["full", "upper", "lower"]
SamModel = Literal["vit_b", "vit_l", "vit_h"]
Threshold = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class DescribeRequest(msgspec.Struct, frozen=True, kw_only=True):
    image_type: DescribeType = "Photo"
    seed: int = 0  # Fooocus samples BLIP unseeded; we seed it so one image always gives one caption


class MaskOptions(msgspec.Struct, frozen=True, kw_only=True):
    """FooocusAPI's GenerateMaskRequest less the image, with its defaults."""

    mask_model: MaskModel = "isnet-general-use"
    cloth_category: ClothCategory = "full"
    dino_prompt_text: str = ""
    sam_model: SamModel = "vit_b"
    box_threshold: Threshold = 0.3
    text_threshold: Threshold = 0.25  # only GroundingDINO's phrase labels use it: it never changes the mask
    sam_max_detections: Annotated[int, msgspec.Meta(ge=0)] = 0  # 0: every detection
    dino_erode_or_dilate: Annotated[int, msgspec.Meta(ge=-64, le=64)] = 0  # px each box grows (negative: shrinks)
    dino_debug: bool = False  # the boxes, filled white on black, instead of SAM's masks


class _ToolCall(msgspec.Struct, frozen=True, kw_only=True, tag_field="tool"):
    """A tool run as a task: its params in the log, the command the runner takes.

    `image` is the stored input (inputs/<sha256>.png); `demo`: the tiny generated models (the demo
    preset), never standing in for real files.
    """

    image: str
    demo: bool = False


class DescribeCall(_ToolCall, tag="describe-image"):
    request: DescribeRequest = msgspec.field(default_factory=DescribeRequest)


class MaskCall(_ToolCall, tag="generate-mask"):
    options: MaskOptions = msgspec.field(default_factory=MaskOptions)


ToolCall = DescribeCall | MaskCall
TOOL_FIELD: Final = "tool"  # a task's params with this key are a tool call, not a generation


def tool_call_of(params: dict[str, object]) -> ToolCall | None:
    """The tool call a task's params hold, or None for a generation (raises on a malformed call)."""
    if TOOL_FIELD not in params:
        return None
    return msgspec.convert(params, ToolCall)  # type: ignore[arg-type]
