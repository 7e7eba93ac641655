"""Vary / Upscale size and strength rules. Expected values are worked out by hand from Fooocus 2.5's
modules/util.py (get_shape_ceil, set_image_shape_ceil) and FooocusAPI's modules/async_worker.py
(apply_vary, apply_upscale), not taken from this module's output."""

from __future__ import annotations

import numpy as np
import pytest

from fooocus_es.engine.imaging import sizes


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [
        (896, 1152, 1024),  # sqrt(1032192) = 1015.97 -> 16 * 64
        (512, 512, 512),
        (1, 1, 64),
        (1000, 1000, 1024),
        (1024, 1024, 1024),
        (1025, 1024, 1088),  # sqrt = 1024.5 -> 17 * 64
    ],
)
def test_get_shape_ceil_rounds_the_geometric_mean_side_up_to_64(height: int, width: int, expected: int) -> None:
    assert sizes.get_shape_ceil(height, width) == expected


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((512, 512), (1024, 1024)),  # ceil 512 < 1024 -> k = 2 -> 1024 x 1024
        ((3000, 1000), (3000, 1000)),  # ceil 1792 is inside 1024..2048: left as is (not long side 2048)
        ((4000, 3000), (2304, 1728)),  # ceil 3520 -> 2048: k = 0.5818, round(36.36) = 36, round(27.27) = 27
        ((1000, 1000), (1000, 1000)),  # ceil already 1024: set_image_shape_ceil returns the image unchanged
        ((640, 480), (1152, 832)),  # ceil 576: round(17.78) = 18, round(13.33) = 13; sqrt(1152*832) -> 1024
        ((5000, 5000), (2048, 2048)),
        ((2048, 2048), (2048, 2048)),
    ],
)
def test_vary_size(size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert sizes.vary_size(*size) == expected


def test_set_image_shape_ceil_keeps_the_array_when_unchanged_and_resamples_otherwise() -> None:
    image = np.zeros((1000, 1000, 3), dtype=np.uint8)
    assert sizes.set_image_shape_ceil(image, 1024) is image
    small = np.full((480, 640, 3), 77, dtype=np.uint8)
    resized = sizes.set_image_shape_ceil(small, 1024)
    assert resized.shape == (832, 1152, 3) and resized.dtype == np.uint8


def test_shape_ceil_size_uses_python_round_half_to_even() -> None:
    # 600x400 -> ceil 512 -> k = 2: H = round(12.5) = 12 (not 13) -> 768; W = round(18.75) = 19 -> 1216.
    assert sizes.shape_ceil_size(600, 400, 1024) == (1216, 768)


def test_shape_ceil_size_survives_degenerate_aspect_ratios() -> None:
    width, height = sizes.shape_ceil_size(4096, 1, 1024)
    assert width % 64 == 0 and height % 64 == 0 and height >= 64


def test_vae_crop_size_and_centre_crop() -> None:
    assert sizes.vae_crop_size(1001, 999) == (1000, 992)
    image = np.arange(11 * 13).reshape(11, 13).astype(np.uint8)
    cropped = sizes.crop_to_multiple(image)
    # ComfyUI's vae_encode_crop_pixels: offsets (11 % 8) // 2 = 1 and (13 % 8) // 2 = 2.
    assert cropped.shape == (8, 8) and cropped[0, 0] == image[1, 2]


def test_snap_size() -> None:
    assert sizes.snap_size(1001, 1003) == (1000, 1000)
    assert sizes.snap_size(1, 1) == (8, 8)
    assert sizes.snap_size(1413, 706, 64) == (1408, 704)


@pytest.mark.parametrize(
    ("method", "goal"),
    [("Disabled", None), ("Vary (Subtle)", "vary"), ("Vary (Strong)", "vary"), ("Upscale (1.5x)", "upscale"),
     ("Upscale (Fast 2x)", "upscale"), ("Upscale (Custom)", "upscale"), ("upscale (2x)", "upscale")],
)  # fmt: skip
def test_uov_goal(method: str, goal: str | None) -> None:
    assert sizes.uov_goal(method) == goal


@pytest.mark.parametrize(
    ("method", "overwrite", "expected"),
    [
        ("Vary (Subtle)", -1, 0.5),
        ("Vary (Strong)", -1, 0.85),
        ("Vary (Strong)", 0.3, 0.3),  # overwrite_vary_strength > 0 wins
        ("Vary (Subtle)", 0, 0.5),  # 0 is not > 0
        ("vary (subtle)", -1, 0.5),
    ],
)
def test_vary_strength(method: str, overwrite: float, expected: float) -> None:
    assert sizes.vary_strength(method, overwrite) == expected


def test_vary_strength_rejects_other_methods() -> None:
    with pytest.raises(ValueError):
        sizes.vary_strength("Upscale (2x)")


def test_upscale_strength() -> None:
    assert sizes.upscale_strength() == 0.382
    assert sizes.upscale_strength(0) == 0.382
    assert sizes.upscale_strength(0.6) == 0.6


@pytest.mark.parametrize(
    ("method", "factor"),
    [
        ("Upscale (1.5x)", 1.5),
        ("Upscale (2x)", 2.0),
        ("Upscale (Fast 2x)", 2.0),
        ("Upscale (2.5x)", 2.5),  # the "@freek99" regex
        ("Upscale (3.2x)", 2.0),  # Fooocus's '2x' substring test fires first
        ("Upscale (9x)", 5.0),  # clamped to 1..5
        ("Upscale (0.5x)", 1.0),
        ("Upscale (Custom)", 1.0),  # no number: the except branch
    ],
)
def test_parse_upscale_factor_matches_fooocus_string_rules(method: str, factor: float) -> None:
    assert sizes.parse_upscale_factor(method) == factor


@pytest.mark.parametrize(
    ("method", "multiple", "factor"),
    [
        ("Upscale (Custom)", 3.2, 3.2),
        ("Upscale (Custom)", 7, 5.0),
        ("Upscale (Custom)", 0.5, 1.0),
        ("Upscale (Custom)", float("nan"), 1.0),
        ("Upscale (1.5x)", 4, 1.5),  # upscale_multiple only matters for Custom
        ("Upscale (Fast 2x)", 4, 2.0),
    ],
)
def test_upscale_factor(method: str, multiple: float, factor: float) -> None:
    assert sizes.upscale_factor(method, multiple) == factor


@pytest.mark.parametrize(
    ("size", "method", "multiple", "target", "shape_ceil", "direct", "strength"),
    [
        # 1728x1344: ceil(sqrt(2322432) = 1523.96) = 1536, within 1024..2800 -> tiled img2img at 0.382.
        ((1152, 896), "Upscale (1.5x)", 1.0, (1728, 1344), 1536, False, 0.382),
        ((1152, 896), "Upscale (2x)", 1.0, (2304, 1792), 2048, False, 0.382),
        ((1600, 1600), "Upscale (2x)", 1.0, (3200, 3200), 3200, True, None),  # > 2800: the SR image as is
        ((512, 512), "Upscale (Fast 2x)", 1.0, (1024, 1024), 1024, True, None),  # fast: always direct
        # Under a 1024 ceil the 4x SR output (1024x1024, 1200x800) goes through set_image_shape_ceil(1024).
        ((256, 256), "Upscale (1.5x)", 1.0, (1024, 1024), 1024, False, 0.382),
        ((300, 200), "Upscale (1.5x)", 1.0, (1200, 800), 1024, False, 0.382),
        ((1001, 667), "Upscale (1.5x)", 1.0, (1501, 1000), 1280, False, 0.382),  # int() truncates 1501.5
        ((800, 600), "Upscale (Custom)", 3.0, (2400, 1800), 2112, False, 0.382),
        ((1000, 1000), "Upscale (Custom)", 3.0, (3000, 3000), 3008, True, None),
    ],
)
def test_plan_upscale(
    size: tuple[int, int],
    method: str,
    multiple: float,
    target: tuple[int, int],
    shape_ceil: int,
    direct: bool,
    strength: float | None,
) -> None:
    plan = sizes.plan_upscale(*size, method, multiple)
    assert (plan.width, plan.height) == target
    assert plan.shape_ceil == shape_ceil
    assert plan.direct_return is direct
    assert plan.strength == strength


def test_plan_upscale_strength_override_and_sr_scale() -> None:
    assert sizes.plan_upscale(1152, 896, "Upscale (2x)", overwrite_upscale_strength=0.5).strength == 0.5
    # A 2x SR model: 600x400 -> set_image_shape_ceil(1024) -> 1216x768 (see the round-half-even test).
    plan = sizes.plan_upscale(300, 200, "Upscale (1.5x)", sr_scale=2)
    assert (plan.width, plan.height) == (1216, 768)
