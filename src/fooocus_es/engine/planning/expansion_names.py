"""Where the Fooocus V2 prompt expansion model lives (Fooocus extras/expansion.py): names only.

User-installed only: outside Fooocus its word list, vocab and weights are CC BY-NC 4.0, so this
project never ships or downloads them (no catalogue entry). The demo model gets a tiny generated
folder under `demo/`, so it can never stand in for the real one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

EXPANSION_DIR: Final = "prompt_expansion"  # under models/
EXPANSION_FOLDER: Final = "fooocus_expansion"
POSITIVE_WORDS_FILE: Final = "positive.txt"
DEMO_SUBDIR: Final = "demo"


def expansion_folder(models_dir: Path, *, demo: bool) -> Path:
    base = Path(models_dir) / EXPANSION_DIR
    return (base / DEMO_SUBDIR if demo else base) / EXPANSION_FOLDER
