"""Request images -> inputs/<sha256>.png, and the request's params with those paths in their place."""

from __future__ import annotations

from typing import Any, Protocol

from fooocus_es.api.urls import IMAGE_FIELDS
from fooocus_es.media.blobs import BlobStore
from fooocus_es.media.decode import decode_image_bytes, image_size, is_no_image, read_image_field
from fooocus_es.media.fetch import fetch_image_url
from fooocus_es.media.inputs import encode_input_png, store_input_png
from fooocus_es.media.limits import DecodeBudget, ImageLimits
from fooocus_es.media.own_files import OwnFiles


class Fetch(Protocol):
    def __call__(self, url: str, *, field: str) -> bytes: ...  # the encoded image bytes


def store_request_images(
    params: dict[str, Any],
    blobs: BlobStore,
    limits: ImageLimits,
    *,
    own_files: OwnFiles | None = None,
    budget: DecodeBudget | None = None,
) -> dict[str, Any]:
    """Blocking (decode, fetch, write): run in a worker thread.

    Every image is read and sized (headers only) before any pixel is decoded, so a request over
    the budget's total is refused at once; then the images are decoded one at a time, each kept
    only as its PNG bytes, and written when all of them are good, so a bad image in one field
    leaves nothing behind from the others. With ``own_files``, this server's own /outputs/ and
    /inputs/ URLs are read from the data dir (chained tasks) instead of being fetched.
    """
    prompts = params.get("controlnet_image") or []
    fields: dict[str, Any] = {name: params.get(name) for name in IMAGE_FIELDS}
    fields.update({f"controlnet_image[{i}].cn_img": item.get("cn_img") for i, item in enumerate(prompts)})
    names = store_images(fields, blobs, limits, own_files=own_files, budget=budget)
    stored = dict(params)
    for name in IMAGE_FIELDS:
        stored[name] = f"inputs/{names[name]}" if name in names else ""
    stored["controlnet_image"] = [
        {**item, "cn_img": f"inputs/{names[key]}" if (key := f"controlnet_image[{i}].cn_img") in names else ""}
        for i, item in enumerate(prompts)
    ]
    return stored


def store_images(
    fields: dict[str, Any],
    blobs: BlobStore,
    limits: ImageLimits,
    *,
    own_files: OwnFiles | None = None,
    budget: DecodeBudget | None = None,
) -> dict[str, str]:
    """Blocking: field -> stored file name (inputs/<name>) of every field that holds an image (as
    store_request_images: all read and sized first, decoded one at a time, written when all are good)."""
    budget = budget or DecodeBudget()
    fetch = _fetcher(limits, own_files)
    encoded = {field: _read(value, field, limits, fetch) for field, value in fields.items()}
    present = {field: data for field, data in encoded.items() if data is not None}
    budget.check_request({field: image_size(data, field=field, limits=limits) for field, data in present.items()})
    pngs: dict[str, bytes] = {}
    for field in list(present):
        data = present.pop(field)  # the encoded bytes are not needed once decoded
        with budget.slot(field):
            image = decode_image_bytes(data, field=field, limits=limits)
            pngs[field] = encode_input_png(image)
            del image  # one decoded image at a time, released before the next is decoded
    return {field: store_input_png(png, blobs) for field, png in pngs.items()}


def has_images(params: dict[str, Any]) -> bool:
    """Whether any image field holds an image (not empty, not a "no image" marker)."""
    values = [params.get(name) for name in IMAGE_FIELDS]
    values += [item.get("cn_img") for item in params.get("controlnet_image") or [] if isinstance(item, dict)]
    return any(value is not None and not is_no_image(value) for value in values)


def _fetcher(limits: ImageLimits, own_files: OwnFiles | None) -> Fetch:
    def fetch(url: str, *, field: str) -> bytes:
        if own_files is not None:
            data = own_files.read(url, field=field, limits=limits)
            if data is not None:
                return data
        return fetch_image_url(url, limits=limits, field=field)

    return fetch


def _read(value: Any, field: str, limits: ImageLimits, fetch: Fetch) -> bytes | None:
    if value is None or is_no_image(value):
        return None
    return read_image_field(value, field=field, limits=limits, fetch=lambda url: fetch(url, field=field))
