"""inputs/<sha256>.png: one file per distinct image, written atomically, once."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fooocus_es.media import blobs as blobs_module
from fooocus_es.media.blobs import LocalBlobs
from fooocus_es.media.decode import decode_image_bytes
from fooocus_es.media.inputs import store_input
from fooocus_es.media.limits import ImageLimits


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def photo() -> Image.Image:
    pixels = np.random.default_rng(7).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def decode(data: bytes) -> Image.Image:
    return decode_image_bytes(data, field="uov_input_image", limits=ImageLimits())


def test_name_is_sha256_of_the_png_and_pixels_survive(tmp_path: Path) -> None:
    image = photo()
    name = store_input(image, LocalBlobs(tmp_path))
    stored = (tmp_path / "inputs" / name).read_bytes()
    assert name == f"{hashlib.sha256(stored).hexdigest()}.png"
    with Image.open(io.BytesIO(stored)) as reread:
        assert reread.format == "PNG" and reread.mode == "RGB"
        assert reread.tobytes() == image.tobytes()
        assert not {"icc_profile", "exif", "transparency"} & set(reread.info)


def test_same_pixels_from_png_and_from_jpeg_share_one_file(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    from_jpeg = decode(encode(photo(), "JPEG", quality=90, exif=exif.tobytes(), icc_profile=b"fake-icc"))
    # The same pixels, uploaded again as a PNG with its own metadata.
    from_png = decode(encode(from_jpeg, "PNG", dpi=(300, 300)))
    assert from_png.tobytes() == from_jpeg.tobytes()

    directory = tmp_path / "inputs"
    blobs = LocalBlobs(tmp_path)
    assert store_input(from_jpeg, blobs) == store_input(from_png, blobs)
    assert len(list(directory.iterdir())) == 1


def test_written_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = photo()
    name = store_input(image, LocalBlobs(tmp_path))
    before = (tmp_path / "inputs" / name).stat()

    def no_second_write(*args: object, **kwargs: object) -> Path:
        raise AssertionError("an existing input must not be written again")

    monkeypatch.setattr(blobs_module, "write_temp", no_second_write)
    assert store_input(image.copy(), LocalBlobs(tmp_path)) == name
    after = (tmp_path / "inputs" / name).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_no_temp_files_left_and_caller_image_untouched(tmp_path: Path) -> None:
    image = photo()
    image.info["icc_profile"] = b"fake-icc"
    blobs = LocalBlobs(tmp_path)
    names = {store_input(image, blobs), store_input(Image.new("RGB", (3, 3), "red"), blobs)}
    assert sorted(p.name for p in (tmp_path / "inputs").iterdir()) == sorted(names)
    assert image.info["icc_profile"] == b"fake-icc"


def test_failed_publish_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(temp: Path, target: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(blobs_module, "publish_replace", crash)
    with pytest.raises(OSError, match="disk full"):
        store_input(photo(), LocalBlobs(tmp_path))
    assert list((tmp_path / "inputs").iterdir()) == []


def test_rgba_is_stored_as_rgba(tmp_path: Path) -> None:
    name = store_input(Image.new("RGBA", (4, 4), (1, 2, 3, 4)), LocalBlobs(tmp_path))
    with Image.open(tmp_path / "inputs" / name) as reread:
        assert reread.mode == "RGBA" and reread.getpixel((0, 0)) == (1, 2, 3, 4)


def test_distinct_images_get_distinct_names(tmp_path: Path) -> None:
    assert store_input(Image.new("RGB", (4, 4), "red"), LocalBlobs(tmp_path)) != store_input(
        Image.new("RGBA", (4, 4), (255, 0, 0, 255)), LocalBlobs(tmp_path)
    )


def test_other_modes_are_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode L"):
        store_input(Image.new("L", (2, 2)), LocalBlobs(tmp_path))
