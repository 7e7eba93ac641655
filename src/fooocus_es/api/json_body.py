"""JSON request bodies with malformed bytes as 400s that say what is wrong, never a 500.

msgspec decodes, but three kinds of bytes escape its DecodeError: nesting deep enough to hit
Python's recursion limit (RecursionError), invalid UTF-8 (UnicodeDecodeError) and numbers beyond
the float range such as 1e999 (a ValidationError without a field). Nesting is bounded before
decoding by a scan that runs at C speed (bytes.replace/translate, one regex) so a deep body costs
no recursion at all; NaN and Infinity are not JSON and stay decode errors.
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

import msgspec
from litestar import Request
from litestar.exceptions import ValidationException
from litestar.types import Empty

MAX_DEPTH: Final = 64  # FooocusAPI's deepest body (enhance_ctrls items) is 3 levels

_DECODER: Final = msgspec.json.Decoder()
_FLOAT_DECODER: Final = msgspec.json.Decoder(float_hook=float)  # 1e999 -> inf, to find which field has it
_NOT_BRACKET: Final = bytes(b for b in range(256) if b not in b"[]{}")
_AS_PARENS: Final = bytes.maketrans(b"[]{}", b"()()")
_STRING: Final = re.compile(rb'"[^"]*"')
_NOT_JSON_NUMBERS: Final = (b"NaN", b"Infinity", b"-Infinity", b"+Infinity", b"inf", b"-inf", b"nan")
_AT_BYTE: Final = re.compile(r"\(byte (\d+)\)")


class MalformedJson(ValueError):
    """Bytes that are not a JSON value this server takes; `field` is "body" or the offending path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def nested_deeper_than(raw: bytes, limit: int) -> bool:
    """Whether arrays and objects in `raw` nest deeper than `limit` (strings do not count).

    Escaped backslashes and quotes go first, then whole strings, then every byte but a bracket;
    each pass of `replace("()")` then removes one level, so `limit + 1` passes decide. Unbalanced
    brackets stop the passes early: the decoder reports those as malformed.
    """
    unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = _STRING.sub(b"", unescaped).translate(_AS_PARENS, _NOT_BRACKET)
    for _ in range(limit + 1):
        shorter = brackets.replace(b"()", b"")
        if len(shorter) == len(brackets):
            return False
        brackets = shorter
    return True


def decode_json(raw: bytes, *, field: str = "body", max_depth: int = MAX_DEPTH) -> Any:
    """`raw` as a JSON value; MalformedJson (naming `field`, or the path of a non-finite number) otherwise."""
    if nested_deeper_than(raw, max_depth):
        raise MalformedJson(field, f"JSON nested deeper than {max_depth} levels")
    try:
        return _DECODER.decode(raw)
    except UnicodeDecodeError:
        raise MalformedJson(field, f"not valid UTF-8 (byte {_first_invalid_utf8(raw)})") from None
    except RecursionError:  # unbalanced opening brackets the scan cannot pair
        raise MalformedJson(field, f"JSON nested deeper than {max_depth} levels") from None
    except msgspec.ValidationError:  # "Number out of range": a number past the float range
        path = non_finite_path(_FLOAT_DECODER.decode(raw))
        name = field if path is None else (path if field == "body" else f"{field}.{path}")
        raise MalformedJson(name, "not a finite number (NaN, Infinity and 1e309 or beyond are refused)") from None
    except msgspec.DecodeError as exc:
        raise MalformedJson(field, f"not valid JSON ({exc}{_hint(raw, str(exc))})") from None


def non_finite_path(value: Any, path: str = "") -> str | None:
    """The path (`freeu_b1`, `loras[0].weight`) of the first NaN or infinite float in `value`."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return where or None
        if isinstance(item, dict):
            stack.extend((f"{where}.{key}" if where else str(key), child) for key, child in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((f"{where}[{index}]", child) for index, child in reversed(list(enumerate(item))))
    return None


def _first_invalid_utf8(raw: bytes) -> int:
    """The offset in the body (msgspec's error counts from the start of the string it was in)."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start
    return 0


def _hint(raw: bytes, message: str) -> str:
    found = _AT_BYTE.search(message)
    if found is None:
        return ""
    at = int(found.group(1))
    if any(raw.startswith(word, at) for word in _NOT_JSON_NUMBERS):
        return "; NaN and Infinity are not JSON numbers"
    return ""


def as_validation_error(exc: MalformedJson) -> ValidationException:
    return ValidationException(
        f"{exc.field}: {exc.message}", extra=[{"key": exc.field, "message": exc.message, "source": "body"}]
    )


class SafeBodyRequest(Request):
    """The app's request class: `await request.json()` (and so every `data:` body) decodes with
    decode_json, and a multipart text field that is not valid in its charset is a 400, not a 500."""

    async def form(self) -> Any:
        try:
            return await super().form()
        except (UnicodeDecodeError, LookupError) as exc:  # LookupError: a charset Python does not know
            message = f"a form field is not valid text in its charset ({exc})"
            raise ValidationException(f"form: {message}", extra=[{"key": "form", "message": message}]) from None

    async def json(self) -> Any:
        state = self._connection_state
        if state.json is Empty:
            try:
                state.json = decode_json(await self.body() or b"null")
            except MalformedJson as exc:
                raise as_validation_error(exc) from None
        return state.json
