"""Request image strings (URL, data URI, raw base64) -> checked, fully decoded Pillow images.

Every failure a client can cause becomes an InputImageError naming the request field; nothing
here touches Pillow's process-wide settings (MAX_IMAGE_PIXELS, LOAD_TRUNCATED_IMAGES).
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFile

from fooocus_es.media.errors import InputImageError
from fooocus_es.media.limits import ImageLimits

# FooocusAPI treats these strings as "no image" (fooocus-facts §1.7); Swagger UI sends "string".
NO_IMAGE = frozenset({"", "None", "none", "null", "string"})

# Formats a client may send. A closed list keeps Pillow's rarer parsers (EPS runs Ghostscript,
# PSD, FITS, ...) away from untrusted bytes. "JPEG" also admits multi-picture camera JPEGs, which
# Pillow then reports as MPO.
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")

_NOT_AN_IMAGE_STRING = "not a valid image URL, data URI or base64"
_HIGH_BIT_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
_EXIF_ORIENTATION = 0x0112
# The same table as ImageOps.exif_transpose; see _upright for why it is not called directly.
_ORIENTATION_TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def is_no_image(value: str | None) -> bool:
    return value is None or (isinstance(value, str) and value.strip() in NO_IMAGE)


def parse_image_field(
    value: str,
    *,
    field: str,
    limits: ImageLimits,
    fetch: Callable[[str], bytes] | None,
) -> Image.Image | None:
    """Decode one request image field; None when the field holds a "no image" marker.

    ``fetch`` downloads http(s) URLs (normally ``fetch_image_url`` bound to the limits); None
    disables URL inputs. Errors raised by ``fetch`` are re-labelled with ``field``.
    """
    data = read_image_field(value, field=field, limits=limits, fetch=fetch)
    return None if data is None else decode_image_bytes(data, field=field, limits=limits)


def read_image_field(
    value: str,
    *,
    field: str,
    limits: ImageLimits,
    fetch: Callable[[str], bytes] | None,
) -> bytes | None:
    """A request image field's encoded bytes (base64 decoded, or fetched); None for "no image"."""
    if not isinstance(value, str):
        raise InputImageError(field, "must be a string (URL, data URI or base64)")
    if is_no_image(value):
        return None
    text = value.strip()
    lowered = text[:8].lower()
    if lowered.startswith(("http://", "https://")):
        if fetch is None:
            raise InputImageError(field, "URL inputs are disabled")
        try:
            data = fetch(text)
        except InputImageError as exc:
            raise InputImageError(field, exc.message) from exc
    elif lowered.startswith("data:"):
        data = _decode_data_uri(text, field=field, limits=limits)
    else:
        data = _decode_base64(text, field=field, limits=limits, invalid=_NOT_AN_IMAGE_STRING)
    return data


def image_size(data: bytes, *, field: str, limits: ImageLimits) -> tuple[int, int]:
    """The declared (width, height), checked against ``limits``, from the header alone (no pixels)."""
    if not data:
        raise InputImageError(field, "image is empty")
    _check_byte_size(len(data), field=field, limits=limits)
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as img:
            size = img.size
    except Image.UnidentifiedImageError as exc:
        raise InputImageError(field, f"not a supported image format ({', '.join(ALLOWED_FORMATS)})") from exc
    except Exception as exc:  # a header Pillow cannot parse
        raise InputImageError(field, "image data is corrupt or truncated") from exc
    _check_dimensions(size, field=field, limits=limits)
    return size


def decode_image_bytes(data: bytes, *, field: str, limits: ImageLimits) -> Image.Image:
    """Encoded image bytes -> a fully loaded RGB or RGBA image, upright, with no metadata.

    The declared size is checked against ``limits`` before any pixel data is decoded, so a tiny
    file that claims 100000x100000 costs a header parse, not gigabytes.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone flipped Pillow's global switch; truncated uploads would decode as half-grey
        # images and be stored as if valid. Fail closed rather than flip it back under them.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set; refusing to decode request images")
    if not data:
        raise InputImageError(field, "image is empty")
    _check_byte_size(len(data), field=field, limits=limits)
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as img:
            _check_dimensions(img.size, field=field, limits=limits)
            img.load()  # with LOAD_TRUNCATED_IMAGES off, a truncated file raises here
            upright = _upright(img)
    except (InputImageError, MemoryError):
        raise  # ours already; or a server condition, not the client's fault
    except Image.DecompressionBombError as exc:
        raise InputImageError(field, "image dimensions are too large") from exc
    except Image.UnidentifiedImageError as exc:
        raise InputImageError(field, f"not a supported image format ({', '.join(ALLOWED_FORMATS)})") from exc
    except Exception as exc:
        # Pillow's decoders raise OSError, SyntaxError, ValueError, struct.error, EOFError, ...
        # for malformed input; all of them mean "this upload is broken", not a server fault.
        raise InputImageError(field, "image data is corrupt or truncated") from exc
    return _normalise_mode(upright, field=field)


def _decode_data_uri(text: str, *, field: str, limits: ImageLimits) -> bytes:
    header, comma, payload = text[len("data:") :].partition(",")
    if not comma:
        raise InputImageError(field, "malformed data URI (no comma)")
    params = [part.strip().lower() for part in header.split(";")[1:]]
    if "base64" not in params:
        raise InputImageError(field, "data URI must be base64-encoded")
    # The declared media type is not trusted either way: Pillow sniffs the real format.
    return _decode_base64(payload, field=field, limits=limits, invalid="data URI holds invalid base64")


def _decode_base64(text: str, *, field: str, limits: ImageLimits, invalid: str) -> bytes:
    compact = "".join(text.split())  # clients wrap base64 at 76 columns (MIME) or add newlines
    if not compact:
        raise InputImageError(field, "image is empty")
    # Refuse oversized text before allocating its decoded copy: 4 base64 chars carry 3 bytes.
    if len(compact) > 4 * -(-limits.max_bytes // 3):
        raise InputImageError(field, f"image is larger than {limits.max_bytes} bytes")
    # Restore omitted padding (common in URL-ish encoders); a length of 4n+1 stays invalid.
    compact += "=" * (-len(compact) % 4)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:  # ValueError: non-ASCII characters
        raise InputImageError(field, invalid) from exc
    _check_byte_size(len(data), field=field, limits=limits)
    return data


def _check_byte_size(size: int, *, field: str, limits: ImageLimits) -> None:
    if size > limits.max_bytes:
        raise InputImageError(field, f"image is larger than {limits.max_bytes} bytes")


def _check_dimensions(size: tuple[int, int], *, field: str, limits: ImageLimits) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise InputImageError(field, f"image has no pixels ({width}x{height})")
    if width > limits.max_side or height > limits.max_side:
        raise InputImageError(field, f"image is {width}x{height}; no side may exceed {limits.max_side} pixels")
    if width * height > limits.max_pixels:
        raise InputImageError(
            field, f"image is {width}x{height} ({width * height} pixels); the limit is {limits.max_pixels} pixels"
        )


def _upright(img: Image.Image) -> Image.Image:
    """A new, file-less copy of ``img`` turned upright per its EXIF orientation.

    ImageOps.exif_transpose would leave a cached, rewritten Exif object (camera make, GPS, ...)
    on the result that info.clear() does not reach; transposing here keeps the result clean.
    """
    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION)
    except Exception:
        # Phone cameras write broken EXIF often enough; a sideways image beats refusing it.
        orientation = None
    method = _ORIENTATION_TRANSPOSES.get(orientation) if isinstance(orientation, int) else None
    return img.transpose(method) if method is not None else img.copy()


def _normalise_mode(img: Image.Image, *, field: str) -> Image.Image:
    """RGB for everything except RGBA, which is kept because masks are read from its alpha."""
    mode = img.mode
    if mode == "F":
        raise InputImageError(field, "32-bit floating-point images are not supported")
    try:
        if mode in ("RGB", "RGBA"):
            result = img
        elif mode == "RGBa":
            result = img.convert("RGBA")  # un-premultiply
        elif mode in _HIGH_BIT_DEPTH_MODES:
            result = _high_bit_depth_to_l(img).convert("RGB")
        elif mode in ("P", "PA"):
            # Via RGBA so palette transparency (tRNS) is resolved the way Pillow documents.
            result = img.convert("RGBA").convert("RGB")
        elif mode == "La":
            result = img.convert("LA").convert("RGB")
        else:  # 1, L, LA, CMYK, YCbCr, LAB, HSV, RGBX
            result = img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise InputImageError(field, f"unsupported pixel format {mode}") from exc
    result.info.clear()  # drop EXIF (GPS!), ICC, comments: inputs are stored and served again
    return result


def _high_bit_depth_to_l(img: Image.Image) -> Image.Image:
    # Pillow's I -> L conversion clips at 255 instead of scaling, which turns 16-bit images
    # white; map 0..65535 onto 0..255 with rounding instead.
    wide = np.clip(np.asarray(img, dtype=np.int64), 0, 65535)
    return Image.fromarray(((wide + 128) // 257).astype(np.uint8))  # 2-D uint8 -> mode L
