"""What real clients send beyond the contract, and how much of it we accept.

Upstream's pydantic models ignore unknown keys and coerce "true" or "12" to bool and int; RunPod
workers forward their own job keys, scripts send fields FooocusAPI never had. So unknown keys are
ignored, but never silently: their names go into the task's notes and the X-Ignored-Fields
header. Values keep their checks (Litestar converts with msgspec's strict=False, which is where the
string-to-bool/number coercion happens; a wrong type or range is still a 400 naming the field).
"""

from __future__ import annotations

import typing
from functools import cache
from typing import Any, Final

import msgspec
from msgspec import Struct

from fooocus_es.media.decode import is_no_image

IGNORED_HEADER: Final = "X-Ignored-Fields"
_MAX_LISTED: Final = 50  # a body with thousands of junk keys does not get thousands of notes


def _item_struct(annotation: Any) -> type[Struct] | None:
    """The Struct a `list[Struct]` field holds (through Annotated/Union wrappers), else None."""
    for arg in typing.get_args(annotation) or ():
        if isinstance(arg, type) and issubclass(arg, Struct):
            return arg
        found = _item_struct(arg)
        if found is not None:
            return found
    return None


@cache  # get_type_hints evaluates every annotation: ~4 ms a request, for an answer fixed per type
def _nested_structs(struct_type: type[Struct]) -> dict[str, type[Struct]]:
    hints = typing.get_type_hints(struct_type, include_extras=True)
    return {
        name: item for name in struct_type.__struct_fields__ if (item := _item_struct(hints.get(name))) is not None
    }


def ignored_fields(raw: Any, struct_type: type[Struct]) -> list[str]:
    """Names in the raw JSON body that `struct_type` does not know, nested ones as `loras[0].x`."""
    if not isinstance(raw, dict):
        return []
    known = set(struct_type.__struct_fields__)
    nested = _nested_structs(struct_type)
    ignored = [str(key) for key in raw if key not in known]
    for name, item_type in nested.items():
        items = raw.get(name)
        if isinstance(items, list):
            item_known = set(item_type.__struct_fields__)
            ignored += [
                f"{name}[{index}].{key}"
                for index, item in enumerate(items)
                if isinstance(item, dict)
                for key in item
                if key not in item_known
            ]
    return ignored[:_MAX_LISTED]


def ignored_note(ignored: list[str]) -> list[str]:
    return [f"ignored fields this server does not know: {', '.join(ignored)}"] if ignored else []


def ignored_header(ignored: list[str]) -> dict[str, str]:
    """X-Ignored-Fields: the names with anything but printable ASCII escaped as \\uXXXX.

    A header value is latin-1 on the wire (a key like "caf\u00e9" failed to encode: a 500) and must not
    carry CR/LF (a key with a newline would have split the header).
    """
    return {IGNORED_HEADER: ", ".join(_header_safe(name) for name in ignored)} if ignored else {}


def _header_safe(name: str) -> str:
    return "".join(char if " " <= char <= "~" else f"\\u{ord(char):04x}" for char in name)


def drop_empty_image_prompts(sent: dict[str, Any]) -> dict[str, Any]:
    """A controlnet_image item without an image (no cn_img, '', 'None') is dropped, as upstream pads them."""
    items = sent.get("controlnet_image")
    if not isinstance(items, list):
        return sent
    kept = [item for item in items if not is_no_image(item.get("cn_img"))]
    return {**sent, "controlnet_image": kept} if len(kept) != len(items) else sent


def decode_lenient(raw: Any, struct_type: type[Struct]) -> Any:
    """`raw` (decoded JSON or form values) as `struct_type`, coercing strings as pydantic does.

    Raises msgspec.ValidationError with the path of the offending field.
    """
    return msgspec.convert(raw, struct_type, strict=False)
