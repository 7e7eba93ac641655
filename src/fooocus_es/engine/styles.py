"""Style names (pure). The names are Fooocus's; templates arrive with the styles feature."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

SPECIAL_STYLES = ("Fooocus V2", "Random Style")


@cache
def style_names() -> tuple[str, ...]:
    """Every legal style name: the two special ones, then the bundled names."""
    data = resources.files("fooocus_es.engine").joinpath("data/style_names.json").read_text("utf-8")
    return SPECIAL_STYLES + tuple(json.loads(data))
