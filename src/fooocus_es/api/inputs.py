"""Request images -> inputs/<sha256>.png, and the request's params with those paths in their place."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from fooocus_es.api.urls import IMAGE_FIELDS
from fooocus_es.media.decode import is_no_image, parse_image_field
from fooocus_es.media.fetch import fetch_image_url
from fooocus_es.media.inputs import store_input
from fooocus_es.media.limits import ImageLimits


def store_request_images(params: dict[str, Any], inputs_dir: Path, limits: ImageLimits) -> dict[str, Any]:
    """Blocking (decode, fetch, write): run in a worker thread.

    Every image is decoded and checked before any file is written, so a bad image in one field
    leaves nothing behind from the others.
    """
    fetch = partial(fetch_image_url, limits=limits)
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
        stored[name] = f"inputs/{store_input(image, inputs_dir)}" if image is not None else ""
    stored["controlnet_image"] = [
        {**item, "cn_img": f"inputs/{store_input(image, inputs_dir)}" if image is not None else ""}
        for item, image in zip(prompts, decoded_cn, strict=True)
    ]
    return stored


def _decode(value: Any, field: str, limits: ImageLimits, fetch: Any) -> Any:
    if value is None or is_no_image(value):
        return None
    return parse_image_field(value, field=field, limits=limits, fetch=lambda url: fetch(url, field=field))
