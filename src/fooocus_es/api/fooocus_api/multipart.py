"""Fooocus-API's v1 multipart forms -> the body its v2 JSON routes take, for translate.py.

Forms as python-requests builds them (`data=dict, files=dict`): a file part is named after its
field with no extension and no Content-Type of its own, a file that is None is simply absent, a
list becomes repeated fields while other clients send one comma-joined string (upstream splits
every value on commas), a list of dicts becomes repeated Python reprs (`image_prompts={'cn_stop':
0.6, ...}`, which upstream has no field for: ignored), `loras` and `advanced_params` are JSON
strings, booleans are spelled `True`/`False`. Image bytes become base64 strings, so they take the
same decode-and-store path as JSON images; a text value in an image field is read as an image
string (base64, data: or http(s) URL).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any, Final

from litestar.datastructures import FormMultiDict, UploadFile

from fooocus_es.api.json_body import MalformedJson, decode_json
from fooocus_es.engine.planning.plan import ParamError

IMAGE_PARTS: Final = ("input_image", "input_mask")
LIST_FIELDS: Final = frozenset({"style_selections", "outpaint_selections"})
# Text whose empty value means something ("no negative prompt"); any other empty field is absent.
TEXT_FIELDS: Final = frozenset(
    {"prompt", "negative_prompt", "inpaint_additional_prompt", "save_name", "webhook_url", "advanced_params"}
)
_IMAGE_PROMPT_PART: Final = re.compile(r"^(?P<name>cn_img|cn_stop|cn_weight|cn_type)(?P<slot>[1-4])$")


@dataclass
class FormBody:
    body: dict[str, Any] = field(default_factory=dict)  # old-wire names, shaped like the v2 JSON body
    ignored: list[str] = field(default_factory=list)  # parts no field takes
    origin: dict[str, str] = field(default_factory=dict)  # body path -> the form field (cn_stop2, ...)


async def read_form(form: FormMultiDict) -> FormBody:
    parts: dict[str, list[Any]] = {}
    for key, value in form.multi_items():
        parts.setdefault(key, []).append(value)
    out = FormBody()
    slots: dict[int, dict[str, Any]] = {}
    for key, values in parts.items():
        slot_part = _IMAGE_PROMPT_PART.match(key)
        if key in IMAGE_PARTS:
            image = await image_part(values[0])
            if image is not None:
                out.body[key] = image
        elif slot_part is not None:
            slot = slots.setdefault(int(slot_part["slot"]), {})
            name = slot_part["name"]
            slot[name] = await image_part(values[0]) if name == "cn_img" else _text(values[0]) or None
        elif key == "image_prompts":
            out.ignored.append(key)  # Python reprs of dicts; the cn_img1..4 parts carry image prompts
        elif any(isinstance(value, UploadFile) for value in values):
            out.ignored.append(key)  # a file where no field takes one
        elif key in LIST_FIELDS:
            out.body[key] = [item.strip() for value in values for item in _text(value).split(",") if item.strip()]
        elif key == "loras":
            if _text(values[0]).strip():
                out.body[key] = _json(key, _text(values[0]))
        elif _text(values[0]) != "" or key in TEXT_FIELDS:
            out.body[key] = _text(values[0])
    _image_prompts(out, slots)
    return out


def _image_prompts(out: FormBody, slots: dict[int, dict[str, Any]]) -> None:
    prompts = []
    for number in sorted(slots):
        slot = slots[number]
        if slot.get("cn_img") is None:
            continue  # cn_stop/cn_weight/cn_type without a file: an empty slot, as upstream
        index = len(prompts)
        out.origin[f"image_prompts[{index}]"] = f"cn_img{number}"
        for name in ("cn_img", "cn_stop", "cn_weight", "cn_type"):
            out.origin[f"image_prompts[{index}].{name}"] = f"{name}{number}"
        prompts.append({name: slot.get(name) for name in ("cn_img", "cn_stop", "cn_weight", "cn_type")})
    if prompts:
        out.body["image_prompts"] = prompts


async def image_part(value: Any) -> str | None:
    """A form part that carries an image: a file's bytes as base64, or the text (base64, a URL)."""
    if isinstance(value, UploadFile):
        data = await value.read()
        return base64.b64encode(data).decode("ascii") if data else None
    return value or None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _json(name: str, text: str) -> Any:
    try:
        return decode_json(text.encode("utf-8", "surrogatepass"), field=name)
    except MalformedJson as exc:
        raise ParamError(exc.field, exc.message) from None
