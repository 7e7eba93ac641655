"""Overlapping tiles and linear-feather blending, for work that must not hold a whole image at once.

Pure numpy, no torch: the super-resolution pass (`upscalers.upscale`) and the tiled img2img pass use
the same boxes and the same blending.

The tiles form a grid (the product of one list of spans per axis) and each tile's weight is the
product of one linear ramp per axis, so the sum of all weights at a pixel is the product of two 1-D
sums. `iter_tiled_rows` (and `tiled_map` on top of it) divides by those 1-D sums up front, so it
needs no image-sized weight accumulator, and it finishes output rows band by band, so its float
working set is one row of tiles rather than the whole output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

Span = tuple[int, int]  # [start, stop) along one axis
TileFn = Callable[[np.ndarray], np.ndarray]


class Box(NamedTuple):
    """A tile: `x`, `y` of its top-left corner and its size, in pixels."""

    x: int
    y: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.x + self.width

    @property
    def bottom(self) -> int:
        return self.y + self.height

    def scaled(self, scale: int) -> Box:
        return Box(self.x * scale, self.y * scale, self.width * scale, self.height * scale)


def _floor_to(value: int, multiple: int) -> int:
    return value // multiple * multiple


def _ceil_to(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _validate(tile: int, overlap: int, multiple: int) -> None:
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    if _floor_to(tile, multiple) - _ceil_to(overlap, multiple) < multiple:
        raise ValueError(f"tile {tile} must exceed overlap {overlap} by at least {multiple} (both rounded to it)")


def axis_spans(length: int, tile: int, overlap: int, multiple: int = 8) -> list[Span]:
    """Equal spans covering [0, length): each a multiple of `multiple` and at most `tile` long.

    Uses the fewest spans whose neighbours overlap by at least `overlap`, each made only as long
    as that needs (1024 px at tile 512, overlap 32 gives three spans of 368, not three of 512).
    Starts are multiples of `multiple` except the last span, which ends flush with the image, so
    a side that is not a multiple still gets full-size spans. A side shorter than `multiple` gets
    one span of its own length: no multiple-sized span fits inside it. A side too short for two
    spans to overlap by `overlap` gets two that overlap as much as they can.
    """
    _validate(tile, overlap, multiple)
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    largest = _floor_to(min(tile, length), multiple)
    if length < multiple or largest == length:
        return [(0, length)]
    overlap = _ceil_to(overlap, multiple)  # keeps every step below a multiple of `multiple`
    if largest - overlap < multiple:  # a side just under one tile: two spans, overlapping all they can
        return [(0, largest), (length - largest, length)]
    count = math.ceil((length - overlap) / (largest - overlap))
    size = _ceil_to(math.ceil((length + (count - 1) * overlap) / count), multiple)
    step = _ceil_to(math.ceil((length - size) / (count - 1)), multiple)
    starts = sorted({min(i * step, length - size) for i in range(count)} | {length - size})
    return [(start, start + size) for start in starts]


def tile_boxes(width: int, height: int, tile: int, overlap: int, multiple: int = 8) -> list[Box]:
    """Row-major grid of overlapping tiles covering a `width` x `height` image (see `axis_spans`)."""
    xs = axis_spans(width, tile, overlap, multiple)
    ys = axis_spans(height, tile, overlap, multiple)
    return [Box(x0, y0, x1 - x0, y1 - y0) for y0, y1 in ys for x0, x1 in xs]


def _ramp(start: int, stop: int, length: int, overlap: int) -> np.ndarray:
    """1-D weights of one span: linear ramps over `overlap` pixels at inner edges, 1 at image borders.

    Never zero, so every pixel keeps a positive total weight even where two tiles overlap by less
    than `overlap` (a tile that had to shrink to fit a small image).
    """
    size = stop - start
    weights = np.ones(size, dtype=np.float32)
    if overlap <= 0:
        return weights
    ramp_up = np.arange(1, size + 1, dtype=np.float32) / (overlap + 1)
    if start > 0:
        weights = np.minimum(weights, ramp_up)
    if stop < length:
        weights = np.minimum(weights, ramp_up[::-1])
    return weights


def blend_weights(box: Box, width: int, height: int, overlap: int) -> np.ndarray:
    """(box.height, box.width) float32 weights: product of the x and y ramps of `box` in the image."""
    wx = _ramp(box.x, box.right, width, overlap)
    wy = _ramp(box.y, box.bottom, height, overlap)
    return np.outer(wy, wx)


def _normalised_ramps(spans: list[Span], length: int, overlap: int) -> list[np.ndarray]:
    """Each span's ramp divided by the per-pixel sum of all ramps on this axis (so they sum to 1)."""
    ramps = [_ramp(start, stop, length, overlap) for start, stop in spans]
    total = np.zeros(length, dtype=np.float32)
    for (start, stop), ramp in zip(spans, ramps, strict=True):
        total[start:stop] += ramp
    return [ramp / total[start:stop] for (start, stop), ramp in zip(spans, ramps, strict=True)]


def round_into_range_(rows: np.ndarray, dtype: npt.DTypeLike) -> np.ndarray:
    """Round and clip float `rows` in place to the range of integer `dtype`; returns them cast to it."""
    info = np.iinfo(dtype)
    np.rint(rows, out=rows)
    np.clip(rows, info.min, info.max, out=rows)
    return rows.astype(dtype)


def _store(dst: np.ndarray, src: np.ndarray) -> None:
    """Write finished float rows into the output (rounded and clipped for integer outputs)."""
    if np.issubdtype(dst.dtype, np.integer):
        src = round_into_range_(src, dst.dtype)
    dst[...] = src.reshape(dst.shape)


def _run_tile(fn: TileFn, tile: np.ndarray, scale: int) -> np.ndarray:
    result = np.asarray(fn(tile), dtype=np.float32)
    result = result[:, :, None] if result.ndim == 2 else result
    expected = (tile.shape[0] * scale, tile.shape[1] * scale)
    if result.shape[:2] != expected:
        raise ValueError(f"fn returned a {result.shape[:2]} tile, expected {expected}")
    return result


def iter_tiled_rows(
    image: np.ndarray,
    fn: TileFn,
    *,
    tile: int,
    overlap: int,
    scale: int = 1,
    multiple: int = 8,
    on_tile: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Apply `fn` to overlapping tiles of `image` (H, W[, C]); yield finished output rows in order.

    `fn` maps an (h, w[, C]) tile to an (h*scale, w*scale[, C_out]) array. Each item is
    (first output row, float32 rows of shape (n, W*scale, C_out)), feather-blended; together they
    cover all H*scale rows. The rows are a view of a reused buffer: consume or copy them before
    the next item (changing them in place is fine, they are not read again).
    Memory: one band (a tile row, at output scale) plus one tile.
    `on_tile(done, total)` runs after each tile.
    """
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    height, width = image.shape[:2]
    xs = axis_spans(width, tile, overlap, multiple)
    ys = axis_spans(height, tile, overlap, multiple)
    out_w, out_h = width * scale, height * scale
    wx = _normalised_ramps([(a * scale, b * scale) for a, b in xs], out_w, overlap * scale)
    wy = _normalised_ramps([(a * scale, b * scale) for a, b in ys], out_h, overlap * scale)
    total, done = len(xs) * len(ys), 0
    band: np.ndarray | None = None
    weighted: np.ndarray | None = None  # scratch: fn's result may be a view the caller still owns
    for row, (y0, y1) in enumerate(ys):
        for col, (x0, x1) in enumerate(xs):
            result = _run_tile(fn, image[y0:y1, x0:x1], scale)
            if band is None:  # first tile: now the channel count is known; all tiles are one size
                band = np.zeros((result.shape[0], out_w, result.shape[2]), dtype=np.float32)
                weighted = np.empty_like(result)
            assert weighted is not None
            # Two broadcast multiplies into scratch: no (h, w) weight array, no temporaries.
            np.multiply(result, wy[row][:, None, None], out=weighted)
            weighted *= wx[col][None, :, None]
            band[:, x0 * scale : x1 * scale] += weighted
            done += 1
            if on_tile is not None:
                on_tile(done, total)
        assert band is not None
        # Rows above the next tile row's top are final; the rest carries over into the next band.
        final = (ys[row + 1][0] if row + 1 < len(ys) else height) * scale - y0 * scale
        yield y0 * scale, band[:final]
        carried = band.shape[0] - final
        band[:carried] = band[final:].copy()
        band[carried:] = 0.0


def tiled_map(
    image: np.ndarray,
    fn: TileFn,
    *,
    tile: int,
    overlap: int,
    scale: int = 1,
    multiple: int = 8,
    out_dtype: npt.DTypeLike = np.float32,
    on_tile: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """`iter_tiled_rows` collected into one (H*scale, W*scale[, C_out]) array of `out_dtype`.

    Integer outputs are rounded and clipped. A 2-D image whose `fn` returns 2-D tiles gives a 2-D
    result. Memory: the output plus one band plus one tile.
    """
    out: np.ndarray | None = None
    rows = iter_tiled_rows(image, fn, tile=tile, overlap=overlap, scale=scale, multiple=multiple, on_tile=on_tile)
    for top, finished in rows:
        if out is None:
            channels = finished.shape[2]
            out_w, out_h = image.shape[1] * scale, image.shape[0] * scale
            flat = image.ndim == 2 and channels == 1
            out = np.empty((out_h, out_w) if flat else (out_h, out_w, channels), dtype=out_dtype)
        _store(out[top : top + finished.shape[0]], finished)
    assert out is not None
    return out
