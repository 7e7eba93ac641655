"""Request images stored as inputs/<sha256>.png, so identical images share one file.

The name is the SHA-256 of the PNG we write (so ``sha256sum`` of a file matches its name), not
of the uploaded bytes: one image sent as PNG, JPEG-decoded-to-same-pixels or base64 with
different wrapping lands in one file. FooocusAPI hashes the base64 of its PNG instead
(fooocus-facts §1.7, §5.10); names therefore differ from FooocusAPI's for the same image.
"""

from __future__ import annotations

import hashlib
import io

from PIL import Image

from fooocus_es.media.blobs import BlobStore

# The request fields that hold one image each (controlnet_image items hold one more in cn_img).
IMAGE_FIELDS = ("uov_input_image", "inpaint_input_image", "inpaint_mask_image_upload", "enhance_input_image")
TOOL_IMAGE_FIELD = "image"  # a tool task's one image (engine/planning/tool_types.py)

# Fixed encoder settings: the same pixels must give the same bytes, hence the same name.
# Level 6 (zlib's default) because inputs are written once and kept: size beats speed here.
_PNG_SETTINGS = {"compress_level": 6, "optimize": False}


def encode_input_png(image: Image.Image) -> bytes:
    """Deterministic PNG of an RGB or RGBA image, with no metadata chunks at all."""
    if image.mode not in ("RGB", "RGBA"):
        raise ValueError(f"inputs are stored as RGB or RGBA, got mode {image.mode}")
    clean = image.copy()
    clean.info.clear()  # ICC, EXIF, text or tRNS from the source would change the bytes
    buffer = io.BytesIO()
    clean.save(buffer, format="PNG", **_PNG_SETTINGS)
    return buffer.getvalue()


def store_input(image: Image.Image, blobs: BlobStore) -> str:
    """Store ``image`` as ``inputs/<sha256>.png`` unless it is already there; return the file name."""
    return store_input_png(encode_input_png(image), blobs)


def store_input_png(data: bytes, blobs: BlobStore) -> str:
    """Store PNG bytes made by encode_input_png (decoded images need not be kept until the write)."""
    name = f"{hashlib.sha256(data).hexdigest()}.png"
    key = f"inputs/{name}"
    if blobs.exists(key):
        return name  # content-addressed: the stored blob already holds these exact bytes
    # Two requests racing on one image both write identical bytes: harmless.
    blobs.put(key, data)
    return name


def stored_input_keys(params: dict[str, object]) -> list[str]:
    """The inputs/ keys a stored task's params name (what a runner on another machine must fetch)."""
    keys = [params.get(name) for name in IMAGE_FIELDS]
    keys += [params.get(TOOL_IMAGE_FIELD)] if "tool" in params else []
    items = params.get("controlnet_image")
    keys += [item.get("cn_img") for item in items if isinstance(item, dict)] if isinstance(items, list) else []
    return [key for key in keys if isinstance(key, str) and key.startswith("inputs/")]
