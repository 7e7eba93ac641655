"""Presets: Fooocus-format JSON files mapped onto request defaults (pure)."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

# Fooocus preset key -> request field it supplies.
PRESET_FIELDS: dict[str, str] = {
    "default_prompt": "prompt",
    "default_prompt_negative": "negative_prompt",
    "default_model": "base_model_name",
    "default_refiner": "refiner_model_name",
    "default_refiner_switch": "refiner_switch",
    "default_styles": "style_selections",
    "default_sample_sharpness": "sharpness",
    "default_cfg_scale": "guidance_scale",
    "default_sampler": "sampler_name",
    "default_scheduler": "scheduler_name",
    "default_performance": "performance_selection",
    "default_aspect_ratio": "aspect_ratios_selection",
    "default_overwrite_step": "overwrite_step",
    "default_vae": "vae_name",
    "default_inpaint_engine_version": "inpaint_engine",
}
DOWNLOAD_KINDS: dict[str, str] = {
    "checkpoint_downloads": "checkpoints",
    "lora_downloads": "loras",
    "vae_downloads": "vae",
}
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class PresetError(ValueError):
    pass


def _bundled_dir() -> Path:
    return Path(str(resources.files("fooocus_es").joinpath("presets")))


def preset_dirs(data_dir: Path | None) -> list[Path]:
    """The data dir's presets/ first, so a user's file shadows a bundled one of the same name."""
    dirs = [data_dir / "presets"] if data_dir is not None else []
    return [*dirs, _bundled_dir()]


def list_presets(data_dir: Path | None = None) -> list[str]:
    names = {p.stem for d in preset_dirs(data_dir) if d.is_dir() for p in d.glob("*.json")}
    return sorted(names)


def load_preset(name: str, data_dir: Path | None = None) -> dict[str, Any]:
    if not _NAME.match(name) or name.startswith("."):
        raise PresetError(f"invalid preset name {name!r}")
    for folder in preset_dirs(data_dir):
        path = folder / f"{name}.json"
        if path.is_file():
            data = json.loads(path.read_text("utf-8"))
            if not isinstance(data, dict):
                raise PresetError(f"preset {name!r} is not a JSON object")
            return data
    raise PresetError(f"unknown preset {name!r}; available: {', '.join(list_presets(data_dir))}")


def preset_request_defaults(preset: dict[str, Any]) -> dict[str, Any]:
    """The request fields a preset supplies, in the request's own shapes."""
    fields = {field: preset[key] for key, field in PRESET_FIELDS.items() if key in preset}
    if "default_loras" in preset:
        fields["loras"] = [_lora_from_preset(item) for item in preset["default_loras"]]
    return fields


def _lora_from_preset(item: list[Any]) -> dict[str, Any]:
    # Fooocus accepts [enabled, file, weight] and the legacy [file, weight].
    if len(item) == 3:
        return {"enabled": bool(item[0]), "model_name": str(item[1]), "weight": float(item[2])}
    return {"enabled": True, "model_name": str(item[0]), "weight": float(item[1])}


def preset_downloads(preset: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(file name, url, models sub-folder) for every file the preset names."""
    return [
        (name, url, folder) for key, folder in DOWNLOAD_KINDS.items() for name, url in (preset.get(key) or {}).items()
    ]
