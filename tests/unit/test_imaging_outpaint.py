"""Outpaint padding. Values follow FooocusAPI's modules/async_worker.py apply_outpaint: int(H * 0.3)
for top/bottom and int(W * 0.3) for left/right, outpaint_distance [l, t, r, b] used when > 0, np.pad
with mode='edge' for the image and 255 for the mask."""

from __future__ import annotations

import numpy as np
import pytest

from fooocus_es.engine.imaging import outpaint


def _inputs(width: int = 1000, height: int = 800) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[100:120, 200:260] = 255
    return image, mask


def test_left_adds_30_percent_of_the_width_with_edge_pixels() -> None:
    image, mask = _inputs()
    new_image, new_mask = outpaint.expand_for_outpaint(image, mask, ["Left"])
    assert new_image.shape == (800, 1300, 3) and new_mask.shape == (800, 1300)
    assert new_mask[:, :300].min() == 255
    assert np.array_equal(new_mask[:, 300:], mask)
    assert np.array_equal(new_image[:, 300:], image)
    assert np.array_equal(new_image[:, :300], np.repeat(image[:, :1], 300, axis=1))


@pytest.mark.parametrize(
    ("selections", "distance", "pads"),
    [
        (["Top", "Bottom"], (0, 0, 0, 0), (0, 240, 0, 240)),  # both int(800 * 0.3), from the original H
        (["Left", "Top", "Right", "Bottom"], (0, 0, 0, 0), (300, 240, 300, 240)),
        (["Left", "Top", "Right", "Bottom"], (10, 0, 20, 5), (10, 240, 20, 5)),  # [left, top, right, bottom]
        (["Right"], (50, 50, 70, 50), (0, 0, 70, 0)),  # distances of unselected sides are ignored
        (["Top"], (0, -5, 0, 0), (0, 240, 0, 0)),  # <= 0 means the 30% default
        (["left", "BOTTOM"], (0, 0, 0, 0), (300, 0, 0, 240)),  # Fooocus lowercases the selections
        ([], (10, 10, 10, 10), (0, 0, 0, 0)),
    ],
)
def test_outpaint_pads(selections: list[str], distance: tuple[int, ...], pads: tuple[int, int, int, int]) -> None:
    assert outpaint.outpaint_pads(1000, 800, selections, distance) == pads


def test_default_fraction_truncates() -> None:
    assert outpaint.outpaint_pads(333, 7, ["Left", "Top"]) == (99, 2, 0, 0)  # int(99.9), int(2.1)


def test_top_and_left_together() -> None:
    image, mask = _inputs()
    new_image, new_mask = outpaint.expand_for_outpaint(image, mask, ["Top", "Left"])
    assert new_image.shape == (1040, 1300, 3)
    assert np.array_equal(new_image[:240, :300], np.broadcast_to(image[0, 0], (240, 300, 3)))
    assert new_mask[:240].min() == 255 and new_mask[:, :300].min() == 255
    assert np.array_equal(new_mask[240:, 300:], mask)


def test_all_sides_with_distances() -> None:
    image, mask = _inputs()
    new_image, new_mask = outpaint.expand_for_outpaint(image, mask, ["Left", "Top", "Right", "Bottom"], [10, 0, 20, 5])
    assert new_image.shape == (800 + 240 + 5, 1000 + 10 + 20, 3)
    assert np.count_nonzero(new_mask == 255) == new_mask.size - 800 * 1000 + np.count_nonzero(mask)
    assert np.array_equal(new_image[240:1040, 10:1010], image)


def test_no_selection_returns_the_inputs() -> None:
    image, mask = _inputs(20, 10)
    new_image, new_mask = outpaint.expand_for_outpaint(image, mask, [])
    assert new_image is image and new_mask is mask


def test_bad_input() -> None:
    image, mask = _inputs(20, 10)
    with pytest.raises(ValueError):
        outpaint.expand_for_outpaint(image, mask, ["Up"])
    with pytest.raises(ValueError):
        outpaint.expand_for_outpaint(image, mask[:5], ["Left"])


def test_outpaint_forces_strength_and_respective_field() -> None:
    assert outpaint.outpaint_overrides([], 0.5, 0.618) == (0.5, 0.618)
    assert outpaint.outpaint_overrides(["Left"], 0.5, 0.618) == (1.0, 1.0)
