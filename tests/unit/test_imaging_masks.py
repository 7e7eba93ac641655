"""Masks from uploads. Rules from FooocusAPI's modules/async_worker.py apply_image_input (Lanczos
resample to the image size, channel mean > 127, max with the canvas mask's channel 0), util.erode_or_dilate
(cv2 3x3, k iterations) and the inpaint guard np.any(mask > 127); the RGBA/greyscale choices are this
project's (see masks.py)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from fooocus_es.engine.imaging import masks


def test_greyscale_mask_thresholds_at_127() -> None:
    upload = np.array([[0, 127, 128, 255]], dtype=np.uint8)
    assert masks.mask_from_upload(upload, 4, 1).tolist() == [[0, 0, 255, 255]]


@pytest.mark.parametrize(
    ("rgb", "masked"),
    [
        ((255, 255, 255), True),
        ((0, 0, 0), False),
        ((255, 0, 0), True),  # channel 0 > 127 (FooocusAPI's canvas mask is the upload's channel 0)
        ((128, 0, 0), True),
        ((0, 255, 255), True),  # mean 170 > 127 (the advanced-masking upload path)
        ((100, 100, 100), False),
        ((127, 127, 127), False),
        ((0, 0, 255), False),  # mean 85, channel 0 is 0
    ],
)
def test_rgb_mask_rule(rgb: tuple[int, int, int], masked: bool) -> None:
    upload = np.full((3, 3, 3), rgb, dtype=np.uint8)
    assert np.all(masks.mask_from_upload(upload, 3, 3) == (255 if masked else 0))


def test_mask_of_another_size_is_resampled_to_the_image() -> None:
    upload = np.zeros((40, 50, 3), dtype=np.uint8)
    upload[10:30, 10:40] = 255  # 20 x 30 block
    mask = masks.mask_from_upload(upload, 100, 80)
    assert mask.shape == (80, 100)
    assert set(np.unique(mask)) <= {0, 255}
    assert mask[40, 50] == 255 and mask[5, 5] == 0 and mask[70, 90] == 0
    assert 2300 <= np.count_nonzero(mask) <= 2500  # the block at 2x is 40 x 60 = 2400


def test_rgba_opaque_follows_the_rgb_rule() -> None:
    upload = np.zeros((2, 2, 4), dtype=np.uint8)
    upload[..., 3] = 255
    upload[0, 0, :3] = (255, 0, 0)
    upload[1, 1, :3] = (90, 90, 90)
    assert masks.mask_from_upload(upload, 2, 2).tolist() == [[255, 0], [0, 0]]


def test_rgba_brush_on_transparent_layer() -> None:
    upload = np.zeros((4, 4, 4), dtype=np.uint8)
    upload[:2, :, :] = (255, 255, 255, 255)  # opaque white strokes
    upload[2, :, :] = (255, 255, 255, 0)  # transparent white: not masked (composited on black)
    upload[3, :, :] = (30, 60, 90, 0)
    mask = masks.mask_from_upload(upload, 4, 4)
    assert mask[:2].min() == 255 and mask[2:].max() == 0


def test_rgba_with_flat_colour_uses_alpha() -> None:
    upload = np.zeros((1, 3, 4), dtype=np.uint8)  # black everywhere, the mask lives in alpha
    upload[0, :, 3] = (200, 100, 0)
    assert masks.mask_from_upload(upload, 3, 1).tolist() == [[255, 0, 0]]


def test_la_and_single_channel_masks() -> None:
    la = np.zeros((1, 2, 2), dtype=np.uint8)
    la[0, 0] = (255, 255)
    la[0, 1] = (10, 255)
    assert masks.mask_from_upload(la, 2, 1).tolist() == [[255, 0]]
    single = np.array([[[200], [20]]], dtype=np.uint8)
    assert masks.mask_from_upload(single, 2, 1).tolist() == [[255, 0]]


def test_rejects_non_uint8_and_odd_shapes() -> None:
    with pytest.raises(ValueError):
        masks.mask_from_upload(np.zeros((2, 2), dtype=np.float32), 2, 2)
    with pytest.raises(ValueError):
        masks.mask_from_upload(np.zeros((2, 2, 5), dtype=np.uint8), 2, 2)


def test_mask_array_from_pil_modes() -> None:
    one_bit = Image.new("1", (2, 1))
    one_bit.putpixel((1, 0), 1)
    assert masks.mask_array_from_pil(one_bit).tolist() == [[0, 255]]
    palette = Image.new("P", (1, 1))
    assert masks.mask_array_from_pil(palette).shape == (1, 1, 4)
    wide = Image.fromarray(np.array([[0, 65535]], dtype=np.uint16))
    assert masks.mask_array_from_pil(wide).tolist() == [[0, 255]]
    assert masks.mask_array_from_pil(Image.new("CMYK", (1, 1))).shape == (1, 1, 3)


def test_invert_and_empty() -> None:
    mask = np.array([[0, 255]], dtype=np.uint8)
    assert masks.invert_mask(mask).tolist() == [[255, 0]]
    assert masks.mask_is_empty(np.zeros((4, 4), dtype=np.uint8))
    assert masks.mask_is_empty(np.full((4, 4), 127, dtype=np.uint8))
    one = np.zeros((4, 4), dtype=np.uint8)
    one[2, 3] = 128
    assert not masks.mask_is_empty(one)
    assert masks.mask_is_empty(masks.prepare_mask(None, 5, 3)) and masks.prepare_mask(None, 5, 3).shape == (3, 5)


def _point(size: int, row: int, col: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[row, col] = 255
    return mask


def test_dilate_is_k_rounds_of_a_3x3_square() -> None:
    assert np.count_nonzero(masks.erode_or_dilate(_point(21, 10, 10), 2)) == 25  # 5 x 5
    assert np.count_nonzero(masks.erode_or_dilate(_point(21, 0, 0), 2)) == 9  # clipped at the corner
    block = np.zeros((21, 21), dtype=np.uint8)
    block[8:13, 8:13] = 255
    eroded = masks.erode_or_dilate(block, -1)
    assert np.count_nonzero(eroded) == 9 and eroded[9:12, 9:12].min() == 255
    assert np.array_equal(masks.erode_or_dilate(block, 0), block)


def test_erode_ignores_the_border_like_cv2() -> None:
    full = np.full((9, 7), 255, dtype=np.uint8)
    assert np.count_nonzero(masks.erode_or_dilate(full, -5)) == 63


def test_erode_or_dilate_changes_area_monotonically() -> None:
    rng = np.random.default_rng(3)
    blob = np.where(rng.random((64, 64)) > 0.7, 255, 0).astype(np.uint8)
    areas = [np.count_nonzero(masks.erode_or_dilate(blob, k)) for k in range(-4, 5)]
    assert areas == sorted(areas) and areas[0] < areas[4] < areas[-1]


def test_grey_pixels_above_127_count_as_masked_for_morphology() -> None:
    mask = np.zeros((5, 5), dtype=np.uint8)
    mask[2, 2] = 200
    assert np.count_nonzero(masks.erode_or_dilate(mask, 1)) == 9


def test_prepare_mask_dilates_before_inverting() -> None:
    upload = np.zeros((30, 30), dtype=np.uint8)
    upload[10:20, 10:20] = 255
    # Fooocus order: dilate the 10x10 block to 12x12, then invert -> 900 - 144 masked pixels.
    mask = masks.prepare_mask(upload, 30, 30, erode_or_dilate_k=1, invert=True)
    assert np.count_nonzero(mask) == 900 - 144


def test_large_mask_operations_are_fast() -> None:
    mask = np.zeros((2048, 2048), dtype=np.uint8)
    mask[300:1700, 200:1800] = 255
    start = time.perf_counter()
    grown = masks.erode_or_dilate(mask, 64)
    shrunk = masks.erode_or_dilate(mask, -64)
    elapsed = time.perf_counter() - start
    assert np.count_nonzero(grown) == (1400 + 128) * (1600 + 128)
    assert np.count_nonzero(shrunk) == (1400 - 128) * (1600 - 128)
    assert elapsed < 1.5
