"""Request images -> inputs/<sha256>.png, and the request's params with those paths in their place."""

from __future__ import annotations

from typing import Any, Protocol

from fooocus_es.api.urls import IMAGE_FIELDS
from fooocus_es.media.blobs import BlobStore
from fooocus_es.media.decode import is_no_image, parse_image_field
from fooocus_es.media.fetch import fetch_image_url
from fooocus_es.media.inputs import store_input
from fooocus_es.media.limits import ImageLimits
from fooocus_es.media.own_files import OwnFiles


class Fetch(Protocol):
    def __call__(self, url: str, *, field: str) -> bytes: ...  # the encoded image bytes


def store_request_images(
    params: dict[str, Any], blobs: BlobStore, limits: ImageLimits, *, own_files: OwnFiles | None = None
) -> dict[str, Any]:
    """Blocking (decode, fetch, write): run in a worker thread.

    Every image is decoded and checked before any file is written, so a bad image in one field
    leaves nothing behind from the others. With ``own_files``, this server's own /outputs/ and
    /inputs/ URLs are read from the data dir (chained tasks) instead of being fetched.
    """
    fetch = _fetcher(limits, own_files)
    decoded: dict[str, Any] = {}
    for name in IMAGE_FIELDS:
        decoded[name] = _decode(params.get(name), name, limits, fetch)
    prompts = params.get("controlnet_image") or []
    decoded_cn = [
        _decode(item.get("cn_img"), f"controlnet_image[{index}].cn_img", limits, fetch)
        for index, item in enumerate(prompts)
    ]
    stored = dict(params)
    for name, image in decoded.items():
        stored[name] = f"inputs/{store_input(image, blobs)}" if image is not None else ""
    stored["controlnet_image"] = [
        {**item, "cn_img": f"inputs/{store_input(image, blobs)}" if image is not None else ""}
        for item, image in zip(prompts, decoded_cn, strict=True)
    ]
    return stored


def _fetcher(limits: ImageLimits, own_files: OwnFiles | None) -> Fetch:
    def fetch(url: str, *, field: str) -> bytes:
        if own_files is not None:
            data = own_files.read(url, field=field, limits=limits)
            if data is not None:
                return data
        return fetch_image_url(url, limits=limits, field=field)

    return fetch


def _decode(value: Any, field: str, limits: ImageLimits, fetch: Fetch) -> Any:
    if value is None or is_no_image(value):
        return None
    return parse_image_field(value, field=field, limits=limits, fetch=lambda url: fetch(url, field=field))
