"""The inpaint area. Expected boxes and sizes are worked out by hand from Fooocus 2.5's
modules/inpaint_worker.py (compute_initial_abcd, solve_abcd, InpaintWorker.__init__, post_process,
color_correction); the fill and feather are also checked against line-by-line transcriptions of
fooocus_fill and morphological_open (PIL, as Fooocus runs them)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from fooocus_es.engine.imaging import inpaint_area as ia
from fooocus_es.engine.imaging.morphology import feather


def _mask(height: int, width: int, *boxes: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    for top, bottom, left, right in boxes:
        mask[top:bottom, left:right] = 255
    return mask


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# --- Fooocus transcriptions (modules/inpaint_worker.py), used as oracles -------------------------------


def _fooocus_fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    current_image = image.copy()
    raw_image = image.copy()
    area = np.where(mask < 127)
    store = raw_image[area]
    for k, repeats in [(512, 2), (256, 2), (128, 4), (64, 4), (33, 8), (15, 8), (5, 16), (3, 16)]:
        for _ in range(repeats):
            current_image = np.array(Image.fromarray(current_image).filter(ImageFilter.BoxBlur(k)))
            current_image[area] = store
    return current_image


def _fooocus_morphological_open(x: np.ndarray) -> np.ndarray:
    x_int32 = np.zeros_like(x).astype(np.int32)
    x_int32[x > 127] = 256
    for _ in range(32):
        maxed = np.array(Image.fromarray(x_int32).filter(ImageFilter.MaxFilter(3))) - 8
        x_int32 = np.maximum(maxed, x_int32)
    return x_int32.clip(0, 255).astype(np.uint8)


def _fooocus_color_correction(img: np.ndarray, image: np.ndarray, soft: np.ndarray) -> np.ndarray:
    fg = img.astype(np.float32)
    bg = image.copy().astype(np.float32)
    w = soft[:, :, None].astype(np.float32) / 255.0
    y = fg * w + bg * (1 - w)
    return y.clip(0, 255).astype(np.uint8)


# --- crop box ------------------------------------------------------------------------------------------


def test_initial_box_is_a_square_grown_by_15_percent() -> None:
    # Rows 40..59, cols 100..119: centres 49 / 109, half-sides 9 -> int(9 * 1.15) = 10.
    assert ia.initial_box(_mask(200, 300, (40, 60, 100, 120))) == (39, 60, 99, 120)
    # Rows 10..19, cols 50..149: centres 14 / 99, half-side int(49 * 1.15) = 56; the top is clipped to 0.
    assert ia.initial_box(_mask(300, 300, (10, 20, 50, 150))) == (0, 71, 43, 156)
    assert ia.initial_box(_mask(10, 10, (3, 4, 7, 8))) == (3, 4, 7, 8)


def test_initial_box_counts_any_nonzero_pixel() -> None:
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[2, 5] = 1  # compute_initial_abcd(mask > 0)
    assert ia.initial_box(mask) == (2, 3, 5, 6)


def test_empty_mask_has_no_box() -> None:
    with pytest.raises(ia.EmptyMaskError):
        ia.initial_box(np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(ia.EmptyMaskError):
        ia.prepare_inpaint(_image(8, 8), np.full((8, 8), 100, dtype=np.uint8))


def test_solve_box_k0_keeps_the_initial_box_and_k1_takes_the_image() -> None:
    mask = _mask(200, 300, (40, 60, 100, 120))
    assert ia.inpaint_crop_box(mask, 0.0) == (39, 60, 99, 120)
    assert ia.inpaint_crop_box(mask, 1.0) == (0, 200, 0, 300)


def test_solve_box_grows_the_shorter_side_until_k_times_each_side() -> None:
    # A point at the centre of 100x100: width then height grow by 2 until both reach 51 >= 50.
    assert ia.inpaint_crop_box(_mask(100, 100, (50, 51, 50, 51)), 0.5) == (25, 76, 25, 76)
    # 100 x 400: the height saturates at 100, then only the width grows, to 201 >= 200.
    assert ia.inpaint_crop_box(_mask(100, 400, (50, 51, 200, 201)), 0.5) == (0, 100, 100, 301)


def test_solve_box_invariants_near_the_border() -> None:
    mask = _mask(90, 160, (2, 5, 150, 159))  # odd sides, so the initial square covers the mask
    for k in (0.0, 0.3, 0.618, 0.9):
        top, bottom, left, right = ia.inpaint_crop_box(mask, k)
        assert 0 <= top <= 2 and bottom >= 5 and left <= 150 and 159 <= right <= 160
        assert bottom - top >= 90 * k and right - left >= 160 * k


def test_initial_box_of_a_small_even_sized_mask_misses_its_last_row_and_column() -> None:
    # Fooocus floors the half-side: rows 20..29 -> centre 24, int(4 * 1.15) = 4 -> rows 20..28 only.
    assert ia.initial_box(_mask(64, 64, (20, 30, 20, 30))) == (20, 29, 20, 29)


def test_respective_field_must_be_within_0_and_1() -> None:
    with pytest.raises(ValueError):
        ia.inpaint_crop_box(_mask(10, 10, (2, 3, 2, 3)), 1.5)


# --- diffusion size ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        # 201x100 is under a 1024 ceil: the SR output 804x400 (ceil 576) -> k = 1.78 -> 1408x704.
        # (Sizing the 201x100 crop itself would give 1472x704.)
        ((201, 100), (1408, 704, True)),
        ((1, 1), (1024, 1024, True)),
        ((1152, 896), (1152, 896, False)),  # ceil 1024 already: unchanged
        ((1000, 1000), (1000, 1000, False)),
        ((2000, 1000), (1408, 704, False)),  # ceil 1472 -> k = 0.6957: round(21.74), round(10.87)
    ],
)
def test_crop_diffusion_size(size: tuple[int, int], expected: tuple[int, int, bool]) -> None:
    assert ia.crop_diffusion_size(*size) == expected


def test_prepare_inpaint_crop_mask_and_sizes() -> None:
    image = _image(100, 400)
    job = ia.prepare_inpaint(image, _mask(100, 400, (50, 51, 200, 201)), respective_field=0.5, strength=0.5)
    assert job.box == (0, 100, 100, 301)
    assert job.crop_size == (1408, 704)
    assert job.crop_mask.shape == (704, 1408) and set(np.unique(job.crop_mask)) <= {0, 255}
    assert job.needs_super_resolution and not job.super_resolved
    assert np.array_equal(job.crop_fill, job.crop_image)  # strength <= 0.99: no fill


def test_prepare_inpaint_runs_the_upscaler_on_small_crops() -> None:
    calls: list[tuple[int, ...]] = []

    def upscaler(crop: np.ndarray) -> np.ndarray:
        calls.append(crop.shape)
        return np.repeat(np.repeat(crop, 4, axis=0), 4, axis=1)

    image = _image(100, 400)
    job = ia.prepare_inpaint(image, _mask(100, 400, (50, 51, 200, 201)), 0.5, 0.5, upscaler=upscaler)
    assert calls == [(100, 201, 3)] and job.super_resolved and job.crop_size == (1408, 704)
    large = ia.prepare_inpaint(_image(896, 1152), _mask(896, 1152, (100, 200, 100, 200)), 1.0, 0.5, upscaler)
    assert len(calls) == 1 and not large.needs_super_resolution and large.crop_size == (1152, 896)


# --- fill ----------------------------------------------------------------------------------------------


def test_fooocus_fill_matches_the_fooocus_transcription() -> None:
    image = _image(60, 90, seed=4)
    mask = _mask(60, 90, (10, 30, 20, 50), (40, 45, 70, 88))
    mask[55, 3] = 200
    assert np.array_equal(ia.fooocus_fill(image, mask), _fooocus_fill(image, mask))
    # A small mask far from the border: the small-radius blurs only touch a window around it.
    image = _image(120, 160, seed=12)
    mask = _mask(120, 160, (50, 58, 70, 81))
    assert np.array_equal(ia.fooocus_fill(image, mask), _fooocus_fill(image, mask))


def test_fill_blurs_the_surroundings_into_the_mask_and_keeps_the_rest() -> None:
    image = np.zeros((96, 128, 3), dtype=np.uint8)
    image[:, :64] = (220, 20, 20)
    image[:, 64:] = (20, 20, 220)
    mask = _mask(96, 128, (30, 60, 15, 45))
    filled = ia.fooocus_fill(image, mask)
    inside = filled[30:60, 15:45].reshape(-1, 3).astype(int)
    assert inside[:, 0].min() > 180 and inside[:, 2].max() < 60  # red surroundings, not blue
    outside = mask < 127
    assert np.array_equal(filled[outside], image[outside])


def test_prepare_inpaint_fills_above_strength_099() -> None:
    image = _image(64, 64, seed=5)
    job = ia.prepare_inpaint(image, _mask(64, 64, (20, 40, 20, 40)), respective_field=1.0, strength=1.0)
    keep = job.crop_mask < 127
    assert np.array_equal(job.crop_fill[keep], job.crop_image[keep])
    assert not np.array_equal(job.crop_fill[~keep], job.crop_image[~keep])


# --- feather and paste-back ----------------------------------------------------------------------------


def test_feather_values_fall_by_8_per_pixel_of_chebyshev_distance() -> None:
    soft = feather(_mask(100, 100, (40, 41, 40, 41)))
    assert soft[40, 40] == 255  # 256 clipped
    assert soft[40, 41] == 248 and soft[39, 39] == 248
    assert soft[50, 45] == 256 - 8 * 10
    assert soft[71, 40] == 8 and soft[72, 40] == 0


def test_feather_matches_the_fooocus_transcription() -> None:
    rng = np.random.default_rng(6)
    mask = np.where(rng.random((70, 90)) > 0.995, 255, 0).astype(np.uint8)
    mask[0:3, 85:90] = 255
    mask[30, 30] = 128
    assert np.array_equal(feather(mask), _fooocus_morphological_open(mask))


def test_blend_matches_color_correction_within_one_level() -> None:
    rng = np.random.default_rng(7)
    fg, bg = _image(50, 50, 8), _image(50, 50, 9)
    soft = rng.integers(0, 256, (50, 50), dtype=np.uint8)
    soft[:10] = 0
    soft[10:20] = 255
    ours = ia.blend(fg, bg, soft)
    fooocus = _fooocus_color_correction(fg, bg, soft)
    assert np.abs(ours.astype(int) - fooocus.astype(int)).max() <= 1
    assert np.array_equal(ours[:10], bg[:10]) and np.array_equal(ours[10:20], fg[10:20])


def test_paste_back_changes_only_the_feathered_area() -> None:
    image = _image(256, 320, seed=10)
    mask = _mask(256, 320, (100, 130, 150, 190))
    job = ia.prepare_inpaint(image, mask, respective_field=0.618, strength=0.5)
    width, height = job.crop_size
    generated = np.full((height, width, 3), (10, 200, 30), dtype=np.uint8)
    result = ia.paste_back(job, generated)
    assert result.shape == image.shape and result.dtype == np.uint8
    untouched = job.soft_mask == 0
    assert np.array_equal(result[untouched], image[untouched])
    assert np.all(result[mask == 255] == (10, 200, 30))
    ring = (job.soft_mask > 0) & (job.soft_mask < 255)
    assert ring.any() and not np.array_equal(result[ring], image[ring])
    # The feather reaches 31 px beyond the mask and no further (morphological_open).
    assert job.soft_mask[100 - 31, 160] > 0 and job.soft_mask[100 - 32, 160] == 0


def test_paste_back_accepts_a_generated_crop_of_another_size() -> None:
    image = _image(64, 64, seed=11)
    job = ia.prepare_inpaint(image, _mask(64, 64, (20, 30, 20, 30)), respective_field=0.0, strength=0.5)
    result = ia.paste_back(job, np.zeros((17, 23, 3), dtype=np.uint8))
    assert job.box == (20, 29, 20, 29)
    assert result.shape == image.shape
    assert np.all(result[20:29, 20:29] == 0)
    # Outside the box Fooocus pastes the original back, so the mask's last row keeps its pixels.
    assert np.array_equal(result[29, 20:30], image[29, 20:30])
