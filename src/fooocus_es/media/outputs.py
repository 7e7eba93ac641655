"""Output images: encoding with Fooocus metadata, unique never-overwritten files, Accept conversion.

Metadata follows Fooocus (fooocus-facts §3.10): PNG text chunks ``parameters`` and
``fooocus_scheme``; JPEG/WebP EXIF UserComment (0x9286), Software (0x0131), MakerNote (0x927C),
written into IFD0 as Fooocus does, so Fooocus's own metadata reader accepts our files.
"""

from __future__ import annotations

import io
import secrets
import uuid
from datetime import datetime
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from fooocus_es.media.blobs import BlobStore

OUTPUT_FORMATS = ("png", "jpeg", "webp")
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}

_FORMAT_ALIASES = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "webp": "webp"}
_SUFFIX_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}
_ACCEPT_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/webp": "webp"}
_SAVE_EXTENSIONS = frozenset({"png", "jpeg", "jpg", "webp"})
_READ_FORMATS = ("PNG", "JPEG", "WEBP")  # what we write; never hand our own files to other parsers

_EXIF_USER_COMMENT = 0x9286
_EXIF_SOFTWARE = 0x0131
_EXIF_MAKER_NOTE = 0x927C
_EXIF_IFD = 0x8769
# EXIF 2.3 §4.6.5: UserComment starts with an 8-byte character-code prefix.
_UNICODE_PREFIX = b"UNICODE\0"
_ASCII_PREFIX = b"ASCII\0\0\0"

# Fooocus's numbers (§3.8). PNG level 1: outputs are written on the GPU runner's thread, and
# level 1 is several times faster than 6 for ~10% more bytes on photographic content. WebP
# method 4 is libwebp's own default and Fooocus's: 5-6 cost roughly 1.5-3x the time for a
# few percent of size.
_PNG_COMPRESS_LEVEL = 1
_JPEG_QUALITY = 95
_WEBP_QUALITY = 95
_WEBP_METHOD = 4

# Fooocus names files ..._NNNN with NNNN in 1000..9999; after this many taken names in one
# second we stop guessing and switch to a suffix that cannot realistically collide.
_RANDOM_NAME_TRIES = 32


class NotAnImage(ValueError):
    """A stored file that cannot be decoded as an image, so it cannot be converted."""


def encode_image(
    image: Image.Image,
    fmt: str,
    *,
    parameters: str | None = None,
    scheme: str = "fooocus",
    software: str = "fooocus-es",
) -> bytes:
    """Encode ``image`` as png, jpeg or webp; with ``parameters`` None no metadata is written."""
    fmt = _normalise_format(fmt)
    clean = _prepare(image, fmt)
    buffer = io.BytesIO()
    if fmt == "png":
        options: dict[str, object] = {"compress_level": _PNG_COMPRESS_LEVEL}
        if parameters is not None:
            info = PngInfo()
            info.add_text("parameters", parameters)  # falls back to UTF-8 iTXt for non-Latin-1
            info.add_text("fooocus_scheme", scheme)
            options["pnginfo"] = info
        clean.save(buffer, format="PNG", **options)
    else:
        options = {"quality": _JPEG_QUALITY if fmt == "jpeg" else _WEBP_QUALITY}
        if parameters is not None:
            options["exif"] = _metadata_exif(parameters, scheme, software).tobytes()
        if fmt == "jpeg":
            clean.save(buffer, format="JPEG", progressive=True, **options)
        else:
            clean.save(buffer, format="WEBP", lossless=False, method=_WEBP_METHOD, **options)
    return buffer.getvalue()


def read_parameters(data: bytes) -> tuple[str | None, str | None]:
    """(parameters, scheme) embedded by encode_image (or Fooocus); (None, None) when absent.

    Raises PIL.UnidentifiedImageError (an OSError) when ``data`` is not a png/jpeg/webp image.
    Only headers are parsed; no pixel data is decoded.
    """
    with Image.open(io.BytesIO(data), formats=_READ_FORMATS) as img:
        if img.format == "PNG":
            # Our chunks precede IDAT, so .info has them without decoding pixels (.text would).
            return _text_or_none(img.info.get("parameters")), _text_or_none(img.info.get("fooocus_scheme"))
        exif = img.getexif()
        sub_ifd = exif.get_ifd(_EXIF_IFD)  # where the EXIF standard (and other tools) put them
        comment = exif.get(_EXIF_USER_COMMENT, sub_ifd.get(_EXIF_USER_COMMENT))
        scheme = exif.get(_EXIF_MAKER_NOTE, sub_ifd.get(_EXIF_MAKER_NOTE))
        big_endian = exif.endian != "<"
        return _exif_text(comment, big_endian), _exif_text(scheme, big_endian)


def save_output(data: bytes, blobs: BlobStore, ext: str, *, now: datetime) -> str:
    """Store ``outputs/YYYY-MM-DD/YYYY-MM-DD_HH-MM-SS_NNNN.<ext>``; never replaces a blob.

    Returns the key (the path relative to the data dir in POSIX form), e.g.
    ``outputs/2024-05-01/2024-05-01_12-30-00_4821.png``.
    """
    ext = ext.lower()
    if ext not in _SAVE_EXTENSIONS:
        raise ValueError(f"unsupported output extension {ext!r}")
    day = now.strftime("%Y-%m-%d")
    stamp = now.strftime("%Y-%m-%d_%H-%M-%S")
    for suffix in _name_suffixes():
        key = f"outputs/{day}/{stamp}_{suffix}.{ext}"
        if blobs.create(key, data):
            return key
    raise FileExistsError(f"no free output name for {stamp} in outputs/{day}")


def convert_for_accept(path: Path, accept: str | None) -> tuple[bytes, str] | None:
    """FooocusAPI's ``Accept: image/png|jpg|jpeg|webp`` conversion for stored images.

    Returns (bytes, media type) when the client prefers another of our formats over the
    file's own; None to serve the file unchanged (no Accept, the file's type is acceptable at
    least as much, or nothing we can produce was asked for). Embedded parameters are carried over.
    """
    target = conversion_target(path, accept)
    return None if target is None else (convert_file(path, target), MEDIA_TYPES[target])


def conversion_target(path: Path, accept: str | None) -> str | None:
    """The format `accept` asks `path` to be converted to, or None to serve it unchanged."""
    current = _SUFFIX_FORMATS.get(path.suffix.lower())
    if current is None or not accept:
        return None
    return preferred_format(accept, current)


def convert_file(path: Path, target: str) -> bytes:
    """The stored image at `path` re-encoded as `target`, embedded parameters carried over.

    Raises NotAnImage when the file is not a png, jpeg or webp image Pillow can decode.
    """
    data = path.read_bytes()
    try:
        parameters, scheme = read_parameters(data)
        with Image.open(io.BytesIO(data), formats=_READ_FORMATS) as img:
            img.load()
            return encode_image(img, target, parameters=parameters, scheme=scheme or "fooocus")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):  # Pillow: "not an image I can read"
        raise NotAnImage(
            f"the stored file is not a png, jpeg or webp image, so it cannot be sent as {MEDIA_TYPES[target]}"
        ) from None


def preferred_format(accept: str, current: str) -> str | None:
    """The output format to convert to for this Accept header, or None to keep ``current``.

    Only formats the client names explicitly are conversion targets; wildcards (``image/*``,
    ``*/*``) count as accepting the file as it is, so browsers are not served conversions.
    """
    ranges = _parse_accept(accept)
    best: str | None = None
    best_q = 0.0
    for media_type, _ in ranges:
        fmt = _ACCEPT_FORMATS.get(media_type)
        if fmt is None:
            continue
        q = _quality(ranges, fmt)
        if q > best_q:
            best, best_q = fmt, q
    if best is None or best == current or _quality(ranges, current) >= best_q:
        return None
    return best


def _parse_accept(accept: str) -> list[tuple[str, float]]:
    """Accept header -> [(media type, q)] in header order; malformed entries are skipped."""
    ranges: list[tuple[str, float]] = []
    for item in accept.split(","):
        media_type, *params = (part.strip() for part in item.split(";"))
        if not media_type:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = -1.0
        if q >= 0.0:
            ranges.append((media_type.lower(), q))
    return ranges


def _quality(ranges: list[tuple[str, float]], fmt: str) -> float:
    """RFC 9110 §12.5.1: the most specific matching range decides a type's q."""
    exact = [q for media_type, q in ranges if _ACCEPT_FORMATS.get(media_type) == fmt]
    if exact:
        return max(exact)
    for wildcard in ("image/*", "*/*"):
        matches = [q for media_type, q in ranges if media_type == wildcard]
        if matches:
            return max(matches)
    return 0.0


def _normalise_format(fmt: str) -> str:
    try:
        return _FORMAT_ALIASES[fmt.lower()]
    except KeyError:
        raise ValueError(f"unsupported output format {fmt!r}; expected one of {OUTPUT_FORMATS}") from None


def _prepare(image: Image.Image, fmt: str) -> Image.Image:
    """A metadata-free image in a mode the format can store.

    Pillow's PNG and JPEG writers copy ICC profiles, tRNS and comments from ``image.info``; a
    fresh copy with empty info keeps "no parameters" meaning "no metadata at all".
    """
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if fmt == "jpeg" or not has_alpha:
        clean = image if image.mode == "RGB" else image.convert("RGB")
    else:
        clean = image if image.mode == "RGBA" else image.convert("RGBA")
    if clean is image:
        clean = image.copy()
    clean.info.clear()
    return clean


def _metadata_exif(parameters: str, scheme: str, software: str) -> Image.Exif:
    exif = Image.Exif()
    big_endian = exif.endian != "<"  # Pillow writes a fresh Exif big-endian ("MM")
    exif[_EXIF_USER_COMMENT] = _user_comment(parameters, big_endian)
    exif[_EXIF_SOFTWARE] = software
    exif[_EXIF_MAKER_NOTE] = scheme
    return exif


def _user_comment(text: str, big_endian: bool) -> str | bytes:
    # ASCII goes in as a plain string, exactly as Fooocus writes it, so Fooocus can read it
    # back. Pillow would turn non-ASCII into "?" there, so such text gets the standard
    # UNICODE (UTF-16 in the EXIF byte order) encoding instead, which exiftool & co. decode.
    if text.isascii():
        return text
    return _UNICODE_PREFIX + text.encode("utf-16-be" if big_endian else "utf-16-le")


def _exif_text(value: object, big_endian: bool) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        if value.startswith(_UNICODE_PREFIX):
            return value[len(_UNICODE_PREFIX) :].decode("utf-16-be" if big_endian else "utf-16-le", "replace")
        if value.startswith(_ASCII_PREFIX):
            value = value[len(_ASCII_PREFIX) :]
        return value.rstrip(b"\0").decode("utf-8", "replace")
    return str(value)


def _text_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def _name_suffixes() -> list[str]:
    randoms = [str(1000 + secrets.randbelow(9000)) for _ in range(_RANDOM_NAME_TRIES)]
    return [*randoms, uuid.uuid4().hex[:12]]
