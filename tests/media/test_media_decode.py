"""Request image strings and bytes -> checked RGB/RGBA images, or InputImageError."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from fooocus_es.media.decode import NO_IMAGE, decode_image_bytes, is_no_image, parse_image_field
from fooocus_es.media.errors import InputImageError
from fooocus_es.media.limits import ImageLimits

LIMITS = ImageLimits()
FIELD = "uov_input_image"


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def noise(size: tuple[int, int] = (64, 64), mode: str = "RGB") -> Image.Image:
    channels = len(mode)
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(pixels)


def png_header_only(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose IHDR claims width x height."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def parse(value: str, **kwargs: object) -> Image.Image | None:
    options: dict[str, object] = {"field": FIELD, "limits": LIMITS, "fetch": None}
    options.update(kwargs)
    return parse_image_field(value, **options)  # type: ignore[arg-type]


# -- strings ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [*sorted(NO_IMAGE), None, "  ", " null "])
def test_no_image_markers(value: str | None) -> None:
    assert is_no_image(value)
    if value is not None:
        assert parse(value) is None


def test_raw_base64_with_line_breaks() -> None:
    original = noise()
    text = base64.encodebytes(encode(original)).decode()  # MIME style: newline every 76 chars
    assert "\n" in text
    image = parse(text)
    assert image is not None and image.mode == "RGB"
    assert image.tobytes() == original.tobytes()


def test_base64_without_padding_is_accepted() -> None:
    text = base64.b64encode(encode(noise((5, 3)))).decode().rstrip("=")
    image = parse(text)
    assert image is not None and image.size == (5, 3)


def test_data_uri() -> None:
    original = noise((8, 8))
    uri = "data:image/png;base64," + base64.b64encode(encode(original)).decode()
    image = parse(uri)
    assert image is not None and image.tobytes() == original.tobytes()


def test_data_uri_declared_type_is_not_trusted() -> None:
    # A JPEG labelled as PNG still decodes: Pillow sniffs the real format.
    uri = "DATA:image/png;BASE64," + base64.b64encode(encode(noise((8, 8)), "JPEG")).decode()
    image = parse(uri)
    assert image is not None and image.size == (8, 8)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("this is not base64!!", "not a valid image URL, data URI or base64"),
        ("ftp://example.com/a.png", "not a valid image URL, data URI or base64"),
        ("iVBORw0KGgoé", "not a valid image URL, data URI or base64"),
        ("data:image/png,rawbytes", "data URI must be base64-encoded"),
        ("data:image/png;base64", "malformed data URI"),
        ("data:image/png;base64,@@@@", "data URI holds invalid base64"),
        (base64.b64encode(b"just some text, no image").decode(), "not a supported image format"),
        (base64.b64encode(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n").decode(), "not a supported"),
    ],
)
def test_garbage_is_refused_with_field(value: str, message: str) -> None:
    with pytest.raises(InputImageError) as info:
        parse(value)
    assert info.value.field == FIELD
    assert message in info.value.message
    assert str(info.value) == f"{FIELD}: {info.value.message}"


def test_non_string_is_refused() -> None:
    with pytest.raises(InputImageError, match="must be a string"):
        parse(123)  # type: ignore[arg-type]


def test_oversized_base64_refused_before_decoding() -> None:
    data = encode(noise((64, 64)))
    small = ImageLimits(max_bytes=len(data) - 1)
    with pytest.raises(InputImageError, match=f"larger than {len(data) - 1} bytes"):
        parse(base64.b64encode(data).decode(), limits=small)
    # Exactly at the limit is fine.
    assert parse(base64.b64encode(data).decode(), limits=ImageLimits(max_bytes=len(data))) is not None


def test_url_without_fetcher_is_refused() -> None:
    with pytest.raises(InputImageError, match="URL inputs are disabled"):
        parse("https://example.com/cat.png")


def test_url_goes_through_fetcher_and_errors_are_relabelled() -> None:
    png = encode(noise((4, 4)))
    seen: list[str] = []

    def fetch(url: str) -> bytes:
        seen.append(url)
        return png

    image = parse("  HTTPS://example.com/cat.png ", fetch=fetch, field="controlnet_image[1].cn_img")
    assert image is not None and image.size == (4, 4)
    assert seen == ["HTTPS://example.com/cat.png"]

    def failing(url: str) -> bytes:
        raise InputImageError("url", "URL returned HTTP 404")

    with pytest.raises(InputImageError) as info:
        parse("http://example.com/x.png", fetch=failing, field="controlnet_image[1].cn_img")
    assert str(info.value) == "controlnet_image[1].cn_img: URL returned HTTP 404"


# -- bytes: integrity and size ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image_is_refused_not_half_decoded(fmt: str) -> None:
    data = encode(noise((128, 128)), fmt)
    for cut in (len(data) // 2, len(data) - 40):
        with pytest.raises(InputImageError, match="corrupt or truncated"):
            decode_image_bytes(data[:cut], field=FIELD, limits=LIMITS)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # never flipped behind the caller's back


def test_refuses_to_run_when_truncated_images_are_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        decode_image_bytes(encode(noise((4, 4))), field=FIELD, limits=LIMITS)


def test_empty_bytes() -> None:
    with pytest.raises(InputImageError, match="empty"):
        decode_image_bytes(b"", field=FIELD, limits=LIMITS)


def test_huge_declared_dimensions_are_refused_from_the_header() -> None:
    bomb = png_header_only(100_000, 100_000)
    assert len(bomb) < 100
    with pytest.raises(InputImageError, match="too large") as info:
        decode_image_bytes(bomb, field=FIELD, limits=LIMITS)
    assert info.value.field == FIELD


def test_pixel_limit_is_checked_before_decoding() -> None:
    # 5000x5000 is under Pillow's own bomb limit but over ours (4096*4096 pixels).
    with pytest.raises(InputImageError, match=r"5000x5000 \(25000000 pixels\)"):
        decode_image_bytes(png_header_only(5000, 5000), field=FIELD, limits=LIMITS)


def test_side_limit() -> None:
    with pytest.raises(InputImageError, match="no side may exceed 8192"):
        decode_image_bytes(png_header_only(9000, 10), field=FIELD, limits=LIMITS)
    small = ImageLimits(max_side=32)
    with pytest.raises(InputImageError, match="no side may exceed 32"):
        decode_image_bytes(encode(noise((33, 8))), field=FIELD, limits=small)


def test_byte_limit_on_raw_bytes() -> None:
    data = encode(noise((32, 32)))
    with pytest.raises(InputImageError, match="larger than"):
        decode_image_bytes(data, field=FIELD, limits=ImageLimits(max_bytes=len(data) - 1))


# -- bytes: modes and orientation ---------------------------------------------------------------


def test_palette_becomes_rgb() -> None:
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.info["transparency"] = 0
    image = decode_image_bytes(encode(palette), field=FIELD, limits=LIMITS)
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 0, 0)


def test_gif_first_frame_becomes_rgb() -> None:
    image = decode_image_bytes(encode(Image.new("RGB", (6, 6), (0, 0, 255)), "GIF"), field=FIELD, limits=LIMITS)
    assert image.mode == "RGB" and image.getpixel((1, 1)) == (0, 0, 255)


def test_la_becomes_rgb() -> None:
    la = Image.new("LA", (4, 4), (200, 10))
    image = decode_image_bytes(encode(la), field=FIELD, limits=LIMITS)
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (200, 200, 200)


def test_greyscale_and_bilevel_become_rgb() -> None:
    for mode, value, expected in (("L", 77, (77, 77, 77)), ("1", 1, (255, 255, 255))):
        image = decode_image_bytes(encode(Image.new(mode, (3, 3), value)), field=FIELD, limits=LIMITS)
        assert image.mode == "RGB" and image.getpixel((0, 0)) == expected


def test_sixteen_bit_greyscale_is_scaled_not_clipped() -> None:
    pixels = np.array([[0, 32768, 65535]], dtype=np.uint16)
    source = Image.fromarray(pixels)
    assert source.mode == "I;16"
    image = decode_image_bytes(encode(source), field=FIELD, limits=LIMITS)
    assert image.mode == "RGB"
    assert [image.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255)]


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_becomes_rgb(fmt: str) -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # red
    image = decode_image_bytes(encode(cmyk, fmt), field=FIELD, limits=LIMITS)
    assert image.mode == "RGB"
    red, green, blue = image.getpixel((8, 8))
    assert red > 240 and green < 15 and blue < 15


def test_rgba_is_kept_with_its_alpha() -> None:
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 40))
    for fmt in ("PNG", "WEBP"):
        options = {"lossless": True} if fmt == "WEBP" else {}
        image = decode_image_bytes(encode(rgba, fmt, **options), field=FIELD, limits=LIMITS)
        assert image.mode == "RGBA"
        assert image.getpixel((0, 0)) == (10, 20, 30, 40)


def test_exif_orientation_is_applied_and_metadata_dropped() -> None:
    # 32x16: red left half, blue right half. Orientation 6 = "rotate 90 degrees clockwise to view".
    source = Image.new("RGB", (32, 16), (255, 0, 0))
    source.paste((0, 0, 255), (16, 0, 32, 16))
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "PhoneMaker"
    data = encode(source, "JPEG", exif=exif.tobytes(), quality=95)
    image = decode_image_bytes(data, field=FIELD, limits=LIMITS)
    assert image.size == (16, 32)
    top, bottom = image.getpixel((8, 4)), image.getpixel((8, 28))
    assert top[0] > 200 and top[2] < 60  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60
    assert image.info == {}
    assert not image.getexif()


def test_result_is_detached_from_the_source_buffer() -> None:
    image = decode_image_bytes(encode(noise((8, 8))), field=FIELD, limits=LIMITS)
    assert not isinstance(image, ImageFile.ImageFile)
    image.load()  # usable after the internal BytesIO is gone


def test_multi_picture_jpeg_is_accepted_as_jpeg() -> None:
    first, second = Image.new("RGB", (8, 4), (255, 0, 0)), Image.new("RGB", (8, 4), (0, 0, 255))
    data = encode(first, "MPO", save_all=True, append_images=[second])
    image = decode_image_bytes(data, field=FIELD, limits=LIMITS)
    assert image.size == (8, 4) and image.getpixel((2, 2))[0] > 200
