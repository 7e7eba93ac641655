"""The JSON body decoder's depth scan and error paths, and the bounded conversion cache."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import msgspec
import pytest
from PIL import Image

from fooocus_es.api.json_body import MalformedJson, decode_json, nested_deeper_than, non_finite_path
from fooocus_es.media.conversions import ConversionCache


@pytest.mark.parametrize(
    ("raw", "deeper"),
    [
        (b"[" * 64 + b"]" * 64, False),
        (b"[" * 65 + b"]" * 65, True),
        (b'{"a": [{"b": [1, {"c": []}]}]}', False),
        (b'{"a": "' + b"[" * 500 + b'"}', False),  # brackets inside a string do not nest
        (b'{"a": "\\"[[[[", "b": "\\\\"}' + b"", False),  # escaped quote, then an escaped backslash before "
        (b'{"a": "x\\\\", "b": ' + b"[" * 70 + b"]" * 70 + b"}", True),  # the string ends at \\" : the rest counts
        (b"[[[[", False),  # unbalanced: left to the decoder, which calls it malformed
    ],
)
def test_nesting_scan(raw: bytes, deeper: bool) -> None:
    assert nested_deeper_than(raw, 64) is deeper


def test_the_scan_is_cheap_for_large_inline_images() -> None:
    body = b'{"prompt": "x", "uov_input_image": "' + base64.b64encode(b"\x00\xff" * 12_000_000) + b'"}'
    started = time.perf_counter()
    assert nested_deeper_than(body, 64) is False
    assert time.perf_counter() - started < 0.5  # 32 MB: C-speed passes, no per-byte Python


def test_decode_errors_name_the_problem() -> None:
    with pytest.raises(MalformedJson, match=r"^loras\[1\]\.weight: not a finite number"):
        decode_json(b'{"loras": [{"weight": 1}, {"weight": -1e400}]}')
    with pytest.raises(MalformedJson, match=r"^advanced_params\.x: not a finite number"):
        decode_json(b'{"x": 1e999}', field="advanced_params")
    with pytest.raises(MalformedJson, match=r"^body: not valid JSON \(Input data was truncated\)"):
        decode_json(b'{"a": ')
    assert decode_json(b'{"a": [1.5, "\\u00e9"]}') == {"a": [1.5, "é"]}
    assert non_finite_path({"a": [1.0, {"b": float("nan")}]}) == "a[1].b"
    assert non_finite_path(msgspec.json.decode(b'{"a": 1}')) is None


def _png(path: Path, colour: tuple[int, int, int]) -> Path:
    Image.new("RGB", (32, 32), colour).save(path, format="PNG")
    return path


def test_conversion_cache_hits_and_stays_bounded(tmp_path: Path) -> None:
    files = [_png(tmp_path / f"{index}.png", (index * 40, 0, 255 - index * 40)) for index in range(6)]
    largest = max(len(ConversionCache().convert(path, "image/webp")[0]) for path in files)
    cache = ConversionCache(max_bytes=4 * largest)  # at least 4 entries fit, never 6 (each is > 2/3 of largest)
    assert cache.convert(files[0], "image/png") is None  # a png asked as png: nothing to convert
    webp, media_type = cache.convert(files[0], "image/webp")
    assert media_type == "image/webp" and Image.open(io.BytesIO(webp)).format == "WEBP"
    assert cache.convert(files[0], "image/webp")[0] == webp and (cache.misses, cache.hits) == (1, 1)
    for path in files[1:]:
        cache.convert(path, "image/webp")
    assert cache.misses == 6 and cache._bytes <= cache.max_bytes and len(cache._entries) < 6
    cache.convert(files[0], "image/webp")  # least recently used: evicted, so encoded again
    assert (cache.misses, cache.hits) == (7, 1)
