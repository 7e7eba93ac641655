"""Tiles and feather blending (engine/imaging/tiling.py): coverage, sizes, weights, and exactness of tiled_map."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from fooocus_es.engine.imaging.tiling import Box, axis_spans, blend_weights, iter_tiled_rows, tile_boxes, tiled_map

SIZES = [(1, 1), (5, 3), (64, 64), (100, 37), (257, 131), (1024, 768), (1000, 1001)]


def coverage(boxes: list[Box], width: int, height: int) -> np.ndarray:
    count = np.zeros((height, width), dtype=np.int32)
    for box in boxes:
        count[box.y : box.bottom, box.x : box.right] += 1
    return count


@pytest.mark.parametrize(("width", "height"), SIZES)
@pytest.mark.parametrize(("tile", "overlap", "multiple"), [(64, 16, 8), (512, 32, 8), (96, 24, 16), (50, 7, 1)])
def test_boxes_cover_every_pixel_with_multiple_sized_tiles(
    width: int, height: int, tile: int, overlap: int, multiple: int
) -> None:
    boxes = tile_boxes(width, height, tile, overlap, multiple)
    assert (coverage(boxes, width, height) >= 1).all()
    for box in boxes:
        assert box.x >= 0 and box.right <= width and box.y >= 0 and box.bottom <= height
        assert box.width <= tile and box.height <= tile
        assert box.width % multiple == 0 or width < multiple
        assert box.height % multiple == 0 or height < multiple


def test_neighbours_overlap_by_at_least_overlap_and_starts_are_aligned() -> None:
    spans = axis_spans(1000, 256, 32, 8)
    for (a0, a1), (b0, _) in zip(spans, spans[1:], strict=False):
        assert b0 > a0 and a1 - b0 >= 32
    assert all(start % 8 == 0 for start, _ in spans[:-1])
    assert spans[-1][1] == 1000


def test_tiles_are_no_larger_than_needed() -> None:
    # Fooocus's SR pass: 1024 px at tile 512 / overlap 32 needs three tiles, which can be ~368 px.
    assert axis_spans(1024, 512, 32, 8) == [(0, 368), (328, 696), (656, 1024)]
    assert axis_spans(512, 512, 32, 8) == [(0, 512)]
    assert axis_spans(5, 64, 8, 8) == [(0, 5)]  # shorter than `multiple`: one span of its own length


def test_grid_is_row_major() -> None:
    boxes = tile_boxes(300, 200, 128, 16, 8)
    assert [(b.y, b.x) for b in boxes] == sorted((b.y, b.x) for b in boxes)


@pytest.mark.parametrize(
    ("tile", "overlap", "multiple"), [(64, 64, 8), (16, 9, 8), (8, 0, 16), (64, -1, 8), (64, 8, 0)]
)
def test_invalid_tiling_is_refused(tile: int, overlap: int, multiple: int) -> None:
    with pytest.raises(ValueError):
        tile_boxes(256, 256, tile, overlap, multiple)


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_weights_are_positive_and_normalise_to_one(width: int, height: int) -> None:
    boxes = tile_boxes(width, height, 64, 16, 8)
    weights = [blend_weights(box, width, height, 16) for box in boxes]
    total = np.zeros((height, width), dtype=np.float64)
    for box, weight in zip(boxes, weights, strict=True):
        assert weight.shape == (box.height, box.width) and (weight > 0).all()
        total[box.y : box.bottom, box.x : box.right] += weight
    normalised = np.zeros_like(total)
    for box, weight in zip(boxes, weights, strict=True):
        normalised[box.y : box.bottom, box.x : box.right] += weight / total[box.y : box.bottom, box.x : box.right]
    np.testing.assert_allclose(normalised, 1.0, atol=1e-6)


def test_weights_ramp_only_at_inner_edges() -> None:
    weight = blend_weights(Box(0, 0, 64, 64), 100, 64, 16)  # left/top/bottom at the border, right inside
    assert (weight[:, :48] == 1).all()
    assert np.all(np.diff(weight[0, 48:]) < 0)  # linear feather down towards the inner edge
    np.testing.assert_allclose(weight[0, 48:], np.arange(16, 0, -1) / 17, rtol=1e-6)
    assert (blend_weights(Box(0, 0, 64, 64), 64, 64, 16) == 1).all()  # one tile: no ramps at all


def random_image(height: int, width: int, channels: int | None = 3, seed: int = 0) -> np.ndarray:
    shape = (height, width) if channels is None else (height, width, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_pointwise_fn_matches_untiled(width: int, height: int) -> None:
    image = random_image(height, width)

    def fn(tile: np.ndarray) -> np.ndarray:
        return tile.astype(np.float32) * 0.5 + 3.0

    out = tiled_map(image, fn, tile=64, overlap=16, multiple=8)
    assert out.dtype == np.float32 and out.shape == image.shape
    np.testing.assert_allclose(out, fn(image), atol=1e-3)  # float32 weight sums; far below 1/255
    exact = tiled_map(image, lambda t: t.astype(np.float32), tile=64, overlap=16, out_dtype=np.uint8)
    np.testing.assert_array_equal(exact, image)


@pytest.mark.parametrize(("width", "height"), [(1, 1), (37, 100), (129, 67), (300, 200)])
def test_scale_2_nearest_fn_equals_plain_nearest_upscale(width: int, height: int) -> None:
    image = random_image(height, width)

    def nearest2(tile: np.ndarray) -> np.ndarray:
        return tile.repeat(2, axis=0).repeat(2, axis=1)

    out = tiled_map(image, nearest2, tile=48, overlap=16, scale=2, multiple=8, out_dtype=np.uint8)
    np.testing.assert_array_equal(out, nearest2(image))


def test_grayscale_stays_two_dimensional() -> None:
    image = random_image(90, 70, channels=None)
    out = tiled_map(image, lambda t: t * 2.0, tile=32, overlap=8)
    assert out.shape == (90, 70)
    np.testing.assert_allclose(out, image * 2.0, atol=1e-3)


def test_channel_count_may_change() -> None:
    image = random_image(50, 40)
    out = tiled_map(image, lambda t: t[:, :, :1].astype(np.float32), tile=32, overlap=8)
    assert out.shape == (50, 40, 1)


def test_rows_arrive_in_order_and_progress_is_reported() -> None:
    image = random_image(200, 150)
    calls: list[tuple[int, int]] = []
    rows = iter_tiled_rows(image, lambda t: t, tile=64, overlap=16, scale=1, on_tile=lambda d, t: calls.append((d, t)))
    next_row = 0
    for top, finished in rows:
        assert top == next_row and finished.shape[1:] == (150, 3)
        next_row += finished.shape[0]
    assert next_row == 200
    total = len(tile_boxes(150, 200, 64, 16))
    assert calls == [(done, total) for done in range(1, total + 1)]


def test_fn_with_wrong_output_size_is_an_error() -> None:
    with pytest.raises(ValueError, match="expected"):
        tiled_map(random_image(40, 40), lambda t: t[:-1], tile=32, overlap=8)


def test_memory_is_output_plus_one_band() -> None:
    image = random_image(1024, 1024)
    tile, scale = 128, 2
    out_bytes = 1024 * scale * 1024 * scale * 3  # uint8 output
    band_bytes = tile * scale * 1024 * scale * 3 * 4  # float32, one tile row at output scale
    tracemalloc.start()
    try:
        out = tiled_map(
            image, lambda t: t.repeat(2, 0).repeat(2, 1), tile=tile, overlap=16, scale=scale, out_dtype=np.uint8
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (2048, 2048, 3)
    # A whole-image float accumulator alone would be 4 * out_bytes (48 MiB here).
    assert peak < out_bytes + 2 * band_bytes, f"peak {peak / 2**20:.1f} MiB"
