"""ComfyUI's prompt emphasis syntax, parsed into (text, weight) segments. Pure: no torch.

Follows `parse_parentheses` / `token_weights` / `escape_important` in ComfyUI's `sd1_clip.py`,
which Fooocus runs unchanged (its `ldm_patched` copy):

* `(text)` multiplies the enclosing weight by 1.1; nesting multiplies again: `((a))` is 1.21.
* `(text:1.3)` sets the weight to 1.3. It REPLACES the enclosing weight rather than multiplying
  it (`((a:1.5))` is 1.5), exactly as ComfyUI does; brackets nested inside it multiply from 1.3.
  The number is whatever Python's `float()` accepts (`0.5`, `1e1`, ` 2 `, `-1`); when it does not
  parse, the colon and the text after it stay part of the text and only the 1.1 applies.
* `\\(` and `\\)` are literal parentheses. Unbalanced parentheses stay in the text as literals.
* Square brackets, braces and angle brackets are not special.

Segments are returned as ComfyUI produces them, never merged: the tokenizer splits each segment on
spaces into words on its own, so merging "x" and "y" (as in "(x)(y)") into "xy" would change the
tokens.
"""

from __future__ import annotations

from typing import Final

EMPHASIS_FACTOR: Final = 1.1
# ComfyUI's own placeholders for escaped parentheses while the brackets are parsed.
_ESCAPED_CLOSE: Final = "\0\1"
_ESCAPED_OPEN: Final = "\0\2"

Segment = tuple[str, float]


def parse_emphasis(text: str, weight: float = 1.0) -> list[Segment]:
    """`text` as (segment, weight) pairs in order, escapes resolved; "" gives []."""
    return [(_unescape(segment), w) for segment, w in _token_weights(_escape(text), weight)]


def has_emphasis(segments: list[Segment]) -> bool:
    """Whether any segment has a weight other than 1 (then the encoder must do the weighting pass)."""
    return any(weight != 1.0 for _, weight in segments)


def _escape(text: str) -> str:
    return text.replace("\\)", _ESCAPED_CLOSE).replace("\\(", _ESCAPED_OPEN)


def _unescape(text: str) -> str:
    return text.replace(_ESCAPED_CLOSE, ")").replace(_ESCAPED_OPEN, "(")


def _split_parentheses(text: str) -> list[str]:
    """Top-level pieces: plain runs and balanced `( ... )` groups (ComfyUI's `parse_parentheses`).

    The nesting level may go negative on a stray ")"; ComfyUI keeps counting from there, so a
    later "(" only opens a group once the level is back at zero. Reproduced as is.
    """
    pieces: list[str] = []
    current = ""
    level = 0
    for char in text:
        if char == "(":
            if level == 0:
                if current:
                    pieces.append(current)
                current = "("
            else:
                current += char
            level += 1
        elif char == ")":
            level -= 1
            if level == 0:
                pieces.append(current + ")")
                current = ""
            else:
                current += char
        else:
            current += char
    if current:
        pieces.append(current)
    return pieces


def _token_weights(text: str, weight: float) -> list[Segment]:
    out: list[Segment] = []
    for piece in _split_parentheses(text):
        if len(piece) >= 2 and piece[0] == "(" and piece[-1] == ")":
            inner, inner_weight = _group_weight(piece[1:-1], weight)
            out += _token_weights(inner, inner_weight)
        else:
            out.append((piece, weight))
    return out


def _group_weight(inner: str, enclosing: float) -> tuple[str, float]:
    """The text and weight of one `( ... )` group's content."""
    colon = inner.rfind(":")
    if colon > 0:  # ComfyUI: a colon at position 0 is not a weight separator
        try:
            return inner[:colon], float(inner[colon + 1 :])
        except ValueError:
            pass
    return inner, enclosing * EMPHASIS_FACTOR
