"""Schemathesis hooks for the fuzz runs: generation bodies stay cheap on the CPU demo engine.

A valid value is replaced only by another valid, cheaper one (1 image, 4 steps, 64 px sides, the
Lightning performance), so a schema-valid case stays valid and a schema-violating one keeps what
made it invalid. Without this, one case of 32 images at 2048 px and 200 steps runs for many minutes.
Loaded by `SCHEMATHESIS_HOOKS=tests/fuzz/cheap_generation.py` (noxfile.py, tests/e2e/test_openapi_fuzz.py).
"""

from __future__ import annotations

import re
from typing import Any, Final

import schemathesis

# field: (lowest valid, highest valid, cheap value)
_INTS: Final = {
    "image_number": (1, 32, 1),
    "n": (1, 10, 1),
    "overwrite_step": (5, 200, 4),
    "steps": (5, 200, 4),
    "overwrite_width": (65, 2048, 64),
    "overwrite_height": (65, 2048, 64),
    "partial_images": (2, 3, 1),
    "upscale_value": (2, 5, 1),
    "upscale_multiple": (2, 5, 1),
}
_PATTERNS: Final = {
    "aspect_ratios_selection": (re.compile(r"^\s*\d+\s*[*×xX]\s*\d+\s*$"), "64*64"),
    "size": (re.compile(r"^\s*\d+\s*[xX×]\s*\d+\s*$"), "64x64"),
}
_UPSCALES: Final = {"Upscale (1.5x)", "Upscale (2x)", "Upscale (Fast 2x)", "Upscale (Custom)"}  # to >= 1024 px
_CHEAP_CHOICES: Final = {
    "performance_selection": ({"Quality", "Speed"}, "Lightning"),
    "quality": ({"high", "hd", "medium", "standard", "auto"}, "low"),
    "uov_method": (_UPSCALES, "Vary (Subtle)"),
    "enhance_uov_method": (_UPSCALES, "Disabled"),
    # Async tasks would pile up in the one runner's queue, and the blocking cases behind them time out.
    "async_process": ({True}, False),
}


def cheapen(value: Any) -> Any:
    """`value` (a body, a form, a nested advanced_params) with the expensive valid values made cheap."""
    if isinstance(value, list):
        return [cheapen(item) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict[Any, Any] = {}
    for key, item in value.items():
        if key in _INTS and isinstance(item, int) and not isinstance(item, bool):
            low, high, cheap = _INTS[key]
            item = cheap if low <= item <= high else item
        elif key in _PATTERNS and isinstance(item, str) and _PATTERNS[key][0].match(item):
            item = _PATTERNS[key][1]
        elif key in _CHEAP_CHOICES and type(item) is type(_CHEAP_CHOICES[key][1]) and item in _CHEAP_CHOICES[key][0]:
            item = _CHEAP_CHOICES[key][1]  # the same type only: 1 for a bool stays a (schema-violating) 1
        else:
            item = cheapen(item)
        out[key] = item
    return out


# Every phase: map_body for generated bodies, map_case for the coverage phase's cases, and
# before_add_examples for the documented examples (1152*896 at Speed is minutes on a CPU).
@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    return cheapen(body)


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    case.body = cheapen(case.body)
    return case


@schemathesis.hook
def before_add_examples(context: Any, examples: list[Any]) -> None:
    for case in examples:
        case.body = cheapen(case.body)
