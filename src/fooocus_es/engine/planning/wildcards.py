"""Wildcards: `__name__` in a prompt becomes one line of `wildcards/name.txt` (fooocus-facts §3.4).

Per image, either a random line from the image's seeded RNG or, with `read_wildcards_in_order`,
line `image_index % count`. Options may contain wildcards themselves; those are expanded level by
level up to MAX_DEPTH. No torch.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Final

# Fooocus's pattern; `[\w-]` also keeps a name from naming a path outside the folder.
WILDCARD: Final = re.compile(r"__([\w-]+)__")
MAX_DEPTH: Final = 8

# name -> its options, or None when there is no such (non-empty) file.
WildcardOptions = Callable[[str], Sequence[str] | None]


def parse_options(text: str) -> tuple[str, ...]:
    """One option per line; blank lines and `#` comments are not options."""
    lines = (line.strip() for line in text.splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


class WildcardDir:
    """A data dir's `wildcards/*.txt` over the bundled examples; each file read on first use.

    Construct one per plan (or per data dir and keep it): the instance caches what it read.
    """

    def __init__(self, data_dir: Path | None = None) -> None:
        self._folder = data_dir / "wildcards" if data_dir is not None else None
        self._read: dict[str, tuple[str, ...] | None] = {}

    def __call__(self, name: str) -> tuple[str, ...] | None:
        if name not in self._read:
            self._read[name] = self._load(name)
        return self._read[name]

    def _load(self, name: str) -> tuple[str, ...] | None:
        if not WILDCARD.fullmatch(f"__{name}__"):
            return None
        text = None
        if self._folder is not None and (self._folder / f"{name}.txt").is_file():
            text = (self._folder / f"{name}.txt").read_text("utf-8", errors="replace")
        else:
            bundled = resources.files("fooocus_es.engine.planning").joinpath(f"data/wildcards/{name}.txt")
            if bundled.is_file():
                text = bundled.read_text("utf-8")
        options = parse_options(text) if text is not None else ()
        return options or None

    def names(self) -> list[str]:
        """Every wildcard name available (bundled and the data dir's), sorted."""
        bundled = resources.files("fooocus_es.engine.planning").joinpath("data/wildcards")
        found = {Path(entry.name).stem for entry in bundled.iterdir() if entry.name.endswith(".txt")}
        if self._folder is not None and self._folder.is_dir():
            found |= {path.stem for path in self._folder.glob("*.txt")}
        return sorted(name for name in found if WILDCARD.fullmatch(f"__{name}__"))


def apply_wildcards(
    text: str,
    options: WildcardOptions,
    rng: random.Random,
    index: int,
    *,
    in_order: bool = False,
    notes: list[str] | None = None,
) -> str:
    """Replace every known `__name__`, left to right, one nesting level per pass.

    Unknown names stay as written (Fooocus turns them into the bare word; keeping the text
    makes the typo visible) and each gets a note, as does nesting deeper than MAX_DEPTH.
    """
    unknown: list[str] = []

    def pick(match: re.Match[str]) -> str:
        name = match.group(1)
        words = options(name)
        if not words:
            if name not in unknown:
                unknown.append(name)
            return match.group(0)
        return words[index % len(words)] if in_order else rng.choice(words)

    for _ in range(MAX_DEPTH):
        if not any(match.group(1) not in unknown for match in WILDCARD.finditer(text)):
            break
        text = WILDCARD.sub(pick, text)
    if notes is not None:
        notes.extend(f"wildcard __{name}__: no wildcards/{name}.txt with options; left as written" for name in unknown)
        if any(match.group(1) not in unknown for match in WILDCARD.finditer(text)):
            notes.append(f"wildcards nested deeper than {MAX_DEPTH} levels were left unexpanded")
    return text
