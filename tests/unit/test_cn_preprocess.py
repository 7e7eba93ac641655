"""Fooocus's preprocessors on synthetic images: the properties that make them what they are, and pinned sums."""

from __future__ import annotations

import numpy as np
import pytest

from fooocus_es.engine.imaging import cn_preprocess as cp
from fooocus_es.engine.imaging.face_crop import FACE_SIZE, FFHQ_TEMPLATE_512, align_face, crop_face


def square(size: int = 128) -> np.ndarray:
    """Flat grey with one bright square: edges exactly on its border."""
    image = np.full((size, size, 3), 60, np.uint8)
    image[32:96, 32:96] = (220, 200, 180)
    return image


def test_hwc3_repeats_gray_and_composites_alpha_over_white() -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert np.array_equal(cp.hwc3(gray), np.repeat(gray[:, :, None], 3, axis=2))
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[0, 0, 3] = 255  # opaque: the colour; the rest transparent: white
    out = cp.hwc3(rgba)
    assert out[0, 0].tolist() == [10, 20, 30] and out[1, 1].tolist() == [255, 255, 255]
    with pytest.raises(ValueError, match="channels"):
        cp.hwc3(np.zeros((2, 2, 2), np.uint8))


def test_resize_mode_1_covers_and_centre_crops_mode_0_stretches() -> None:
    image = np.zeros((50, 200, 3), np.uint8)
    image[:, 90:110] = 255  # a white band in the middle
    covered = cp.resize_image(image, 100, 100, 1)  # height fits (50 -> 100), width 400 cropped to the middle
    assert covered.shape == (100, 100, 3)
    assert covered[:, 50].min() > 200 and covered[:, 5].max() < 30  # the band is centred, 40 px wide
    stretched = cp.resize_image(image, 100, 100, 0)
    assert stretched.shape == (100, 100, 3) and stretched[:, 50].min() > 200 and stretched[:, 40].max() < 30
    with pytest.raises(ValueError, match="mode"):
        cp.resize_image(image, 10, 10, 2)


def test_norm255_maps_the_percentiles_to_the_ends() -> None:
    values = np.linspace(0, 100, 101, dtype=np.float32)
    out = cp.norm255(values, 10, 90)
    assert out[10] == 0 and out[90] == 255 and out[50] == 127 and out[0] == 0 and out[100] == 255
    assert cp.norm255(np.full(5, 3.0), 1, 99).tolist() == [0] * 5  # flat stays flat


def test_canny_pyramid_finds_the_border_and_nothing_in_flat_areas() -> None:
    edges = cp.canny_pyramid(square())
    assert edges.shape == (128, 128, 3) and edges.dtype == np.uint8
    assert np.array_equal(edges[..., 0], edges[..., 1])  # gray, made 3 channels
    border, inside, outside = edges[30:35, 40:90, 0], edges[50:78, 50:78, 0], edges[0:10, 0:10, 0]
    assert border.max() == 255 and inside.max() == 0 and outside.max() == 0
    assert int(edges.sum()) == int(cp.canny_pyramid(square()).sum())  # deterministic


def test_canny_thresholds_change_what_counts_as_an_edge() -> None:
    rng = np.random.default_rng(0)
    noisy = np.clip(square().astype(int) + rng.integers(-25, 25, (128, 128, 3)), 0, 255).astype(np.uint8)
    assert not np.array_equal(cp.canny_pyramid(noisy, 64, 128), cp.canny_pyramid(noisy, 10, 30))


def test_cpds_is_a_normalised_map_unlike_canny() -> None:
    y, x = np.mgrid[0:96, 0:96]
    image = np.stack([x * 2, y * 2, (x + y)], axis=-1).astype(np.uint8)
    image[20:50, 20:50] = (250, 10, 10)
    out = cp.cpds(image)
    assert out.shape == (96, 96, 3) and out.min() == 0 and out.max() == 255
    assert not np.array_equal(out, cp.canny_pyramid(image))
    assert abs(int(out[35, 35, 0]) - int(out[80, 80, 0])) > 20  # the red square stands out of the gradient


def test_control_hint_sizes_and_skip() -> None:
    image = square(100)
    hint = cp.control_hint("PyraCanny", image, 64, 48, canny_low=64, canny_high=128, skip=False)
    assert hint.shape == (48, 64, 3)
    skipped = cp.control_hint("CPDS", image, 64, 48, canny_low=64, canny_high=128, skip=True)
    assert np.array_equal(skipped, cp.resize_image(image, 64, 48, 1))
    with pytest.raises(ValueError, match="ImagePrompt"):
        cp.control_hint("ImagePrompt", image, 64, 48, canny_low=64, canny_high=128, skip=False)


def test_ip_input_is_a_224_stretch() -> None:
    out = cp.ip_input(np.zeros((30, 90, 4), np.uint8))
    assert out.shape == (224, 224, 3) and out.min() == 255  # transparent over white


def test_align_face_maps_template_landmarks_onto_themselves() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8)
    assert np.array_equal(align_face(image, FFHQ_TEMPLATE_512), image)  # identity transform
    # The same face at half size, shifted: aligned back, the landmark pixels land on the template.
    small = np.full((250, 250, 3), 0, np.uint8)
    points = FFHQ_TEMPLATE_512 / 2 + 10  # the 512 face ends at 265: past the 250 image, the border
    for x, y in points.round().astype(int):
        small[y - 2 : y + 3, x - 2 : x + 3] = 255
    aligned = align_face(small, points)
    assert aligned.shape == (FACE_SIZE, FACE_SIZE, 3)
    for x, y in FFHQ_TEMPLATE_512.round().astype(int):
        assert aligned[y, x].min() > 200
    assert aligned[5, 5].tolist() == [0, 0, 0] and aligned[-1, -1].tolist() == [132, 133, 135]  # Fooocus's border


class _NoFaces:
    def detect(self, image_rgb: np.ndarray) -> list:
        return []


def test_crop_face_without_a_face_is_the_whole_image() -> None:
    image = square()
    assert crop_face(_NoFaces(), image) is image
