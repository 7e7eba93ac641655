"""describe-image's Anime tagger: SmilingWolf's WD14 MOAT tagger on onnxruntime (Fooocus extras/wd14tagger.py).

The image: long side resized to the model's square H (read off the input shape, [1, H, H, 3]; 448 for
MOAT) with LANCZOS, pasted centred on white, float32 0..255 in BGR order. The tag CSV (`tag_id,
name, category, count`, with a header): ratings (category 9) at the top are ignored, general tags
run from the first category-0 row to the first category-4 row, character tags from there on.
A general tag is kept above 0.35, a character above 0.85, each group in CSV order (Fooocus does not
sort), characters first; names joined with ", ", parentheses escaped, underscores as spaces.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from PIL import Image

from fooocus_es.engine.tools.masks.rembg_onnx import require_onnxruntime

GENERAL_THRESHOLD: Final = 0.35
CHARACTER_THRESHOLD: Final = 0.85
GENERAL_CATEGORY: Final = "0"
CHARACTER_CATEGORY: Final = "4"


@dataclass(frozen=True)
class TagTable:
    """The CSV's tag names in row order and where each group starts (len(names): no such rows)."""

    names: tuple[str, ...]
    general_start: int
    character_start: int


def read_tags(path: Path) -> TagTable:
    """The tag table of a WD14 CSV; ValueError when it has no tag rows."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[1:]  # the header
    names = tuple(row[1] for row in rows)
    if not names or any(len(row) < 3 for row in rows):
        raise ValueError(f"{path.name} is not a WD14 tag table (tag_id,name,category,count)")
    categories = [row[2] for row in rows]
    general = categories.index(GENERAL_CATEGORY) if GENERAL_CATEGORY in categories else len(names)
    # The character group is the first category-4 row after the general ones (the CSV keeps them last).
    later = categories[general:]
    character = general + later.index(CHARACTER_CATEGORY) if CHARACTER_CATEGORY in later else len(names)
    return TagTable(names, general, character)


def select_tags(
    probs: np.ndarray,
    table: TagTable,
    *,
    general: float = GENERAL_THRESHOLD,
    character: float = CHARACTER_THRESHOLD,
) -> list[str]:
    """Characters over `character` then general tags over `general` (strictly), each in CSV order."""
    # In the scores' own dtype (float32 from the model), as Fooocus compares: 0.85 in float32 is not over 0.85.
    scores = np.asarray(probs).reshape(-1)
    if scores.shape[0] != len(table.names):
        raise ValueError(f"the model scores {scores.shape[0]} tags, the CSV lists {len(table.names)}")
    names, start, end = table.names, table.general_start, table.character_start
    chosen_general = [names[i] for i in range(start, end) if scores[i] > general]
    chosen_characters = [names[i] for i in range(end, len(names)) if scores[i] > character]
    return chosen_characters + chosen_general


def format_tags(names: list[str]) -> str:
    """`name_(x)` -> `name \\(x\\)`, joined with ", " (a prompt: parentheses would be emphasis)."""
    return ", ".join(name.replace("(", "\\(").replace(")", "\\)").replace("_", " ") for name in names)


def wd14_input(image: Image.Image, size: int) -> np.ndarray:
    """The model input: [1, size, size, 3] float32 0..255, BGR, the image centred on white."""
    image = image.convert("RGB")
    ratio = size / max(image.size)
    new_size = (int(image.width * ratio), int(image.height * ratio))  # truncated, as Fooocus does
    square = Image.new("RGB", (size, size), (255, 255, 255))
    offset = ((size - new_size[0]) // 2, (size - new_size[1]) // 2)
    square.paste(image.resize(new_size, Image.Resampling.LANCZOS), offset)
    pixels = np.asarray(square, dtype=np.float32)[:, :, ::-1]  # RGB -> BGR: the Keras model was trained on BGR
    return np.ascontiguousarray(pixels)[None]


def open_session(path: Path) -> Any:
    """onnxruntime's CPU session for `path` (WD14 is small: Fooocus runs it on whatever provider, we on the CPU)."""
    require_onnxruntime()
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


class Wd14Tagger:
    """One onnxruntime session and its tag table, made once and kept."""

    def __init__(self, session: Any, table: TagTable) -> None:
        self.session = session
        self.table = table
        shape = session.get_inputs()[0].shape
        if len(shape) != 4 or not isinstance(shape[1], int) or shape[3] != 3:
            raise ValueError(f"the model does not take an NHWC RGB square (input shape {shape})")
        self.size = int(shape[1])

    def scores(self, image: Image.Image) -> np.ndarray:
        feed = {self.session.get_inputs()[0].name: wd14_input(image, self.size)}
        return np.asarray(self.session.run([self.session.get_outputs()[0].name], feed)[0])[0]

    def tags(self, image: Image.Image) -> str:
        return format_tags(select_tags(self.scores(image), self.table))
