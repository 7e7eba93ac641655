"""Styles: Fooocus-format template files, loaded and looked up by normalised name (no torch).

A style file is a JSON array of `{"name", "prompt", "negative_prompt"}` (fooocus-facts §3.4).
The bundled files (engine/planning/data/styles/) hold our own templates for Fooocus's 277 names; a data
dir's `styles/*.json` load after them, so users can drop in Fooocus's original files or their own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Final

import msgspec

FOOOCUS_V2: Final = "Fooocus V2"
RANDOM_STYLE: Final = "Random Style"
SPECIAL_STYLES: Final = (FOOOCUS_V2, RANDOM_STYLE)

# Fooocus loads these six last, in this order, so their names win over any other file's.
GROUP_ORDER: Final = ("fooocus", "sai", "mre", "twri", "diva", "marc_k3nt3l")
_FOOOCUS_PREFIX: Final = "sdxl_styles_"  # Fooocus's file names: sdxl_styles_sai.json etc.


class Style(msgspec.Struct, frozen=True):
    name: str
    prompt: str = ""
    negative_prompt: str = ""


class StyleFileError(ValueError):
    pass


def normalize_name(name: str) -> str:
    """Fooocus's `normalize_key`: '-' to space, each word capitalised, then a few fixed acronyms."""
    words = name.replace("-", " ").split(" ")
    text = " ".join(word[:1].upper() + word[1:].lower() for word in words)
    for old, new in (("3d", "3D"), ("Sai", "SAI"), ("Mre", "MRE"), ("(s", "(S")):
        text = text.replace(old, new)
    return text


def _group_rank(path: Path) -> int:
    stem = path.stem.removeprefix(_FOOOCUS_PREFIX)
    return GROUP_ORDER.index(stem) + 1 if stem in GROUP_ORDER else 0


def ordered_files(paths: Iterable[Path]) -> list[Path]:
    """Fooocus's order inside one folder: other files by name, then the six group files."""
    return sorted(paths, key=lambda path: (_group_rank(path), path.name))


def parse_styles(text: str, source: str = "<styles>") -> list[Style]:
    """One file's entries with normalised names; raises StyleFileError naming the file."""
    try:
        entries = msgspec.json.decode(text.encode("utf-8"), type=list[Style])
    except msgspec.DecodeError as exc:
        raise StyleFileError(f"{source}: {exc}") from exc
    return [
        Style(name=normalize_name(entry.name), prompt=entry.prompt, negative_prompt=entry.negative_prompt)
        for entry in entries
    ]


@cache
def bundled_styles() -> tuple[Style, ...]:
    """The shipped templates (package data never changes while running, so caching is safe)."""
    folder = resources.files("fooocus_es.engine.planning").joinpath("data/styles")
    files = ordered_files(Path(entry.name) for entry in folder.iterdir() if entry.name.endswith(".json"))
    styles: list[Style] = []
    for path in files:
        styles += parse_styles(folder.joinpath(path.name).read_text("utf-8"), f"bundled {path.name}")
    return tuple(styles)


def user_style_files(data_dir: Path | None) -> list[Path]:
    folder = data_dir / "styles" if data_dir is not None else None
    if folder is None or not folder.is_dir():
        return []
    return ordered_files(path for path in folder.glob("*.json") if path.is_file())


def load_styles(data_dir: Path | None = None, *, errors: list[str] | None = None) -> dict[str, Style]:
    """Every style by name: bundled first, then the data dir's files; a later same name overrides.

    A user file that cannot be read is skipped (as Fooocus does) and described in `errors`.
    """
    styles = {style.name: style for style in bundled_styles()}
    for path in user_style_files(data_dir):
        try:
            entries = parse_styles(path.read_text("utf-8"), str(path))
        except (OSError, UnicodeDecodeError, StyleFileError) as exc:
            if errors is not None:
                errors.append(str(exc) if isinstance(exc, StyleFileError) else f"{path}: {exc}")
            continue
        styles.update((style.name, style) for style in entries)
    return styles


def legal_names(styles: Mapping[str, Style]) -> tuple[str, ...]:
    return SPECIAL_STYLES + tuple(name for name in styles if name not in SPECIAL_STYLES)


def style_names(data_dir: Path | None = None) -> tuple[str, ...]:
    """Every legal style name: "Fooocus V2", "Random Style", then the loaded names in load order."""
    if data_dir is None:
        return _bundled_names()
    return legal_names(load_styles(data_dir))


@cache
def _bundled_names() -> tuple[str, ...]:
    return legal_names({style.name: style for style in bundled_styles()})


class StyleBook:
    """The styles of one data dir, re-read only when its styles/ folder changes.

    Callers (the app's services, the runner) construct one and keep it; nothing is cached globally.
    """

    def __init__(self, data_dir: Path | None = None) -> None:
        self.data_dir = data_dir
        self.errors: tuple[str, ...] = ()
        self._signature: tuple[tuple[str, int, int], ...] | None = None
        self._styles: dict[str, Style] = {}
        self._lock = threading.Lock()  # the runner thread and request threads share one book

    def _current_signature(self) -> tuple[tuple[str, int, int], ...]:
        signature = []
        for path in user_style_files(self.data_dir):
            try:
                stat = path.stat()
            except OSError:
                continue
            signature.append((path.name, stat.st_mtime_ns, stat.st_size))
        return tuple(signature)

    def styles(self) -> dict[str, Style]:
        with self._lock:
            return self._styles_locked()

    def _styles_locked(self) -> dict[str, Style]:
        signature = self._current_signature()
        if signature != self._signature:
            errors: list[str] = []
            self._styles = load_styles(self.data_dir, errors=errors)
            self.errors = tuple(errors)
            self._signature = signature
        return self._styles

    def names(self) -> tuple[str, ...]:
        return legal_names(self.styles())
