"""Output encoding with metadata, unique output files, and Accept conversion."""

from __future__ import annotations

import io
import json
import re
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from fooocus_es.media import outputs as outputs_module
from fooocus_es.media.blobs import LocalBlobs
from fooocus_es.media.outputs import (
    MEDIA_TYPES,
    OUTPUT_FORMATS,
    convert_for_accept,
    encode_image,
    preferred_format,
    read_parameters,
    save_output,
)

NOW = datetime(2024, 5, 1, 12, 30, 5)
ASCII_PARAMS = json.dumps({"prompt": "a cat", "seed": "42"})
UNICODE_PARAMS = json.dumps({"prompt": "café ☕, 猫", "seed": "42"}, ensure_ascii=False)


def picture(mode: str = "RGB") -> Image.Image:
    image = Image.new(mode, (32, 24), (200, 100, 50, 255)[: len(mode)])
    image.paste((10, 20, 30, 255)[: len(mode)], (0, 0, 16, 12))
    return image


@pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
@pytest.mark.parametrize("parameters", [ASCII_PARAMS, UNICODE_PARAMS, "line one\nNegative prompt: x\nSteps: 30"])
def test_metadata_round_trips(fmt: str, parameters: str) -> None:
    data = encode_image(picture(), fmt, parameters=parameters, scheme="a1111")
    with Image.open(io.BytesIO(data)) as reread:
        assert reread.format == fmt.upper()
        assert reread.size == (32, 24)
    assert read_parameters(data) == (parameters, "a1111")


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_exif_layout_matches_fooocus(fmt: str) -> None:
    data = encode_image(picture(), fmt, parameters=ASCII_PARAMS, software="fooocus-es v0.1.0")
    with Image.open(io.BytesIO(data)) as reread:
        exif = reread.getexif()
    # IFD0, plain strings: what Fooocus's own reader looks up.
    assert exif[0x9286] == ASCII_PARAMS
    assert exif[0x0131] == "fooocus-es v0.1.0"
    assert exif[0x927C] == "fooocus"


def test_png_text_chunks() -> None:
    data = encode_image(picture(), "png", parameters=UNICODE_PARAMS)
    with Image.open(io.BytesIO(data)) as reread:
        assert reread.text == {"parameters": UNICODE_PARAMS, "fooocus_scheme": "fooocus"}


@pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
def test_no_parameters_means_no_metadata(fmt: str) -> None:
    source = picture()
    source.info.update({"icc_profile": b"fake-icc", "comment": b"hello", "transparency": (1, 2, 3)})
    data = encode_image(source, fmt, parameters=None)
    assert read_parameters(data) == (None, None)
    with Image.open(io.BytesIO(data)) as reread:
        reread.load()
        assert not reread.getexif()
        assert not {"icc_profile", "comment", "exif", "transparency", "parameters"} & set(reread.info)
    for marker in (b"fooocus", b"fake-icc", b"hello", b"tEXt", b"iTXt", b"Exif"):
        assert marker not in data
    assert source.info["icc_profile"] == b"fake-icc"  # the caller's image is not modified


def test_modes_are_converted_per_format() -> None:
    rgba = encode_image(picture("RGBA"), "png")
    with Image.open(io.BytesIO(rgba)) as reread:
        assert reread.mode == "RGBA"
    jpeg = encode_image(picture("RGBA"), "jpg")  # alias, alpha dropped
    with Image.open(io.BytesIO(jpeg)) as reread:
        assert reread.format == "JPEG" and reread.mode == "RGB"
    assert encode_image(picture(), "JPEG")[:2] == b"\xff\xd8"


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="unsupported output format"):
        encode_image(picture(), "gif")


def test_read_parameters_rejects_non_images() -> None:
    with pytest.raises(OSError):
        read_parameters(b"not an image")


# -- save_output --------------------------------------------------------------------------------


def test_save_output_never_overwrites(tmp_path: Path) -> None:
    outputs_dir = tmp_path / "outputs"
    paths = [save_output(f"image {i}".encode(), LocalBlobs(tmp_path), "png", now=NOW) for i in range(200)]
    assert len(set(paths)) == 200
    pattern = re.compile(r"outputs/2024-05-01/2024-05-01_12-30-05_([0-9]{4}|[0-9a-f]{12})\.png")
    for i, relative in enumerate(paths):
        assert pattern.fullmatch(relative), relative
        assert (tmp_path / relative).read_bytes() == f"image {i}".encode()
    # Only published files: no temporary files left behind.
    assert len(list((outputs_dir / "2024-05-01").iterdir())) == 200


def test_save_output_skips_taken_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    day = tmp_path / "outputs" / "2024-05-01"
    day.mkdir(parents=True)
    taken = day / "2024-05-01_12-30-05_1234.webp"
    taken.write_bytes(b"old")
    monkeypatch.setattr(outputs_module, "_name_suffixes", lambda: ["1234", "1234", "abcdef012345"])
    relative = save_output(b"new", LocalBlobs(tmp_path), "webp", now=NOW)
    assert relative == "outputs/2024-05-01/2024-05-01_12-30-05_abcdef012345.webp"
    assert taken.read_bytes() == b"old"
    monkeypatch.setattr(outputs_module, "_name_suffixes", lambda: ["1234"])
    with pytest.raises(FileExistsError):
        save_output(b"newer", LocalBlobs(tmp_path), "webp", now=NOW)
    assert taken.read_bytes() == b"old"
    assert sorted(p.name for p in day.iterdir()) == [taken.name, Path(relative).name]


@pytest.mark.parametrize("ext", ["../png", "png/../../x", "exe", ""])
def test_save_output_rejects_odd_extensions(tmp_path: Path, ext: str) -> None:
    with pytest.raises(ValueError):
        save_output(b"x", LocalBlobs(tmp_path), ext, now=NOW)
    assert not (tmp_path / "outputs").exists()


# -- Accept conversion ----------------------------------------------------------------------


@pytest.fixture
def stored_png(tmp_path: Path) -> Path:
    path = tmp_path / "a.png"
    path.write_bytes(encode_image(picture(), "png", parameters=UNICODE_PARAMS, scheme="fooocus"))
    return path


@pytest.mark.parametrize(
    "accept",
    [
        None,
        "",
        "image/png",
        "application/json",
        "*/*",
        "image/*",
        "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8",  # a browser <img>
        "image/png;q=0, image/gif",
    ],
)
def test_served_as_is(stored_png: Path, accept: str | None) -> None:
    assert convert_for_accept(stored_png, accept) is None


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [
        ("image/jpeg", "jpeg"),
        ("image/jpg", "jpeg"),
        ("IMAGE/WEBP", "webp"),
        ("image/webp, image/png;q=0.5", "webp"),
        ("image/png;q=0.2, image/jpeg;q=0.9, image/webp;q=0.4", "jpeg"),
    ],
)
def test_converted_with_metadata(stored_png: Path, accept: str, fmt: str) -> None:
    result = convert_for_accept(stored_png, accept)
    assert result is not None
    data, media_type = result
    assert media_type == MEDIA_TYPES[fmt]
    with Image.open(io.BytesIO(data)) as reread:
        assert reread.format == fmt.upper()
    assert read_parameters(data) == (UNICODE_PARAMS, "fooocus")


def test_jpeg_file_to_png(tmp_path: Path) -> None:
    path = tmp_path / "b.jpg"
    path.write_bytes(encode_image(picture(), "jpeg"))
    assert convert_for_accept(path, "image/jpeg") is None
    result = convert_for_accept(path, "image/png")
    assert result is not None and result[1] == "image/png"
    assert read_parameters(result[0]) == (None, None)


def test_preferred_format_ignores_malformed_q() -> None:
    assert preferred_format("image/webp;q=abc, image/jpeg;q=0.5", "png") == "jpeg"
