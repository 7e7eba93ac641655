"""The tools' model files as one table (describe-image, generate_mask, enhance's masks): what a call
needs, where each file goes, where it comes from, under which licence.

Pure data over describe_files and mask_files. A key is a path relative to its models sub-folder;
an HF-format model is a folder of such keys ("grounding-dino-tiny/config.json"), so the single-URL
downloader fetches a bundle file by file.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from fooocus_es.engine.planning.describe_files import (
    BLIP_FILE,
    BLIP_FOLDER,
    BLIP_LICENCE,
    DESCRIBE_DOWNLOADS,
    WD14_LICENCE,
    describe_files,
)
from fooocus_es.engine.planning.enhance import mask_options, should_enhance
from fooocus_es.engine.planning.mask_files import (
    GROUNDING_DINO_FOLDER,
    GROUNDING_DINO_LICENCE,
    INPAINT_DIR,
    MASK_DOWNLOADS,
    REMBG_LICENCE,
    SAM_DIR,
    SAM_LICENCE,
    mask_files,
)
from fooocus_es.engine.planning.plan_types import EnhancePlan
from fooocus_es.engine.planning.tool_types import DescribeCall, MaskOptions, ToolCall

TOOL_DOWNLOADS: Final[dict[str, tuple[str, str]]] = {**MASK_DOWNLOADS, **DESCRIBE_DOWNLOADS}  # key -> (folder, URL)


def licence_of(key: str) -> str:
    """The licence a tool file is published under (the catalogue lists it beside the URL)."""
    if key == BLIP_FILE or key.startswith(BLIP_FOLDER + "/"):
        return BLIP_LICENCE
    if key in DESCRIBE_DOWNLOADS:
        return WD14_LICENCE
    folder, _url = TOOL_DOWNLOADS[key]
    if folder == SAM_DIR:
        return SAM_LICENCE
    if folder == INPAINT_DIR and key.startswith(GROUNDING_DINO_FOLDER + "/"):
        return GROUNDING_DINO_LICENCE
    return REMBG_LICENCE


def options_files(options: MaskOptions) -> tuple[str, ...]:
    return mask_files(options.mask_model, sam_model=options.sam_model, dino_debug=options.dino_debug)


def call_files(call: ToolCall) -> tuple[str, ...]:
    """The TOOL_DOWNLOADS keys one tool call reads (its demo files are generated, not listed here)."""
    if isinstance(call, DescribeCall):
        return describe_files(call.request.image_type)
    return options_files(call.options)


def enhance_files(enhance: EnhancePlan | None) -> tuple[str, ...]:
    """The mask files an enhance plan's passes read, each once, in pass order."""
    found: dict[str, None] = {}
    for item in enhance.passes if enhance is not None else ():
        found.update(dict.fromkeys(options_files(item.mask)))
    return tuple(found)


def where(key: str) -> str:
    """`name in models/folder/ (from URL)`: what a 400 says about a file that is not installed."""
    folder, url = TOOL_DOWNLOADS[key]
    sub, _, name = key.rpartition("/")
    return f"{name} in models/{folder}/{sub + '/' if sub else ''} (from {url})"


def missing_of(keys: Iterable[str], on_disk: frozenset[str]) -> list[str]:
    return [key for key in keys if key not in on_disk]


def check_enhance_files(params: dict[str, Any], on_disk: frozenset[str]) -> tuple[str, str] | None:
    """(field, message) for the first enabled enhance control whose mask files are not installed."""
    if not should_enhance(params):
        return None
    for index, ctrl in enumerate(params.get("enhance_ctrls") or []):
        if not ctrl.get("enhance_enabled"):
            continue
        options = mask_options(ctrl, params)
        missing = missing_of(options_files(options), on_disk)
        if missing:
            what = f"mask model {options.mask_model}"
            return f"enhance_ctrls[{index}].enhance_mask_model", not_installed(what, missing)
    return None


def not_installed(what: str, missing: list[str]) -> str:
    return f"{what} needs model files that are not installed and this server does not download them: " + "; ".join(
        where(key) for key in missing
    )
