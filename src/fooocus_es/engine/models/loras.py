"""Per-task LoRAs on a shared, cached SDXL pipeline, as peft adapters that are never fused.

Each LoRA file is loaded once per pipeline as a named peft adapter, and each task then switches on
exactly its own adapters at its own weights with `set_adapters`. Nothing is fused into the base
weights (fuse/unfuse drifts by up to 1/255 per round trip), so switching is exact: a task without
LoRAs disables every adapter layer and gets bit-for-bit the output of a pipeline that never saw one.

At most `max_cached` adapters stay loaded; the least recently used ones are deleted first. The
bookkeeping lives on the pipeline's UNet, the module that carries the adapters, so pipelines derived
with `from_pipe` (sharing that UNet) share it too.

Threading: these functions mutate the shared pipeline and must only be called from the single
runner thread that also runs the pipeline; there is deliberately no lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import structlog
from safetensors import safe_open

log = structlog.get_logger("fooocus_es.loras")

_CACHE_ATTR: Final = "_fooocus_es_lora_cache"
_LORA_COMPONENTS: Final = ("unet", "text_encoder", "text_encoder_2")
_EMPTY_SLOTS: Final = frozenset({"", "None"})  # Fooocus's unused LoRA slot
# One "down" matrix per adapted layer, in every format diffusers reads (kohya, peft, old diffusers, LoKr).
_LAYER_KEY: Final = re.compile(r"(?:lora_down|lora_A|lora\.down|lora_linear_layer\.down)\.weight$|\.lokr_w1(?:_a)?$")
_SIZE_MISMATCH: Final = re.compile(
    r"size mismatch for (?P<param>\S+): copying a param with shape torch\.Size\((?P<file>\[[^\]]*\])\) from "
    r"checkpoint, the shape in current model is torch\.Size\((?P<model>\[[^\]]*\])\)"
)
# Loggers that narrate a load in detail (per-key reports, "no keys for the text encoder", the
# adapter's whole error text): our LoraUnsupported and the partial-match warning say it shorter.
_NOISY_LOGGERS: Final = ("diffusers.loaders.peft", "diffusers.loaders.lora_base", "transformers.integrations.peft")


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA slot of a task: a file name in models/loras and its weight (-2..2 in Fooocus)."""

    name: str
    weight: float


class LoraUnsupported(Exception):
    """A LoRA file that cannot be applied to this pipeline; the message names the file and says why."""

    def __init__(self, name: str, detail: str) -> None:
        self.name = name
        self.detail = detail
        super().__init__(f"LoRA {name!r} {detail}")


@dataclass
class _AdapterCache:
    """Adapters loaded on one UNet: adapter name -> LoRA file name, least recently used first."""

    adapters: OrderedDict[str, str] = field(default_factory=OrderedDict)


# -- public API ----------------------------------------------------------------------------------
def activate_loras(
    pipe: Any, loras: Sequence[LoraSpec], path_for: Callable[[str], Path], *, max_cached: int = 8
) -> None:
    """Make `pipe` apply exactly `loras` (UNet and text encoders), loading files not yet loaded.

    Weight-0 entries and empty slots are skipped and the same file twice sums its weights; an empty
    list disables every adapter. `path_for(name)` gives the file of a LoRA (or raises, e.g.
    ModelMissing). More than `max_cached` LoRAs in one task are all kept until a later call evicts.
    On any failure the pipeline is left with every adapter disabled and the failing file unloaded;
    a file that cannot be applied raises LoraUnsupported.
    """
    if max_cached < 1:
        raise ValueError(f"max_cached must be at least 1, got {max_cached}")
    wanted = merge_loras(loras)
    if not wanted:
        deactivate_loras(pipe)
        return
    try:
        paths = {name: path_for(name) for name in wanted}
        adapters = _ensure_loaded(pipe, paths, max_cached)
        pipe.enable_lora()  # set_adapters does not undo an earlier disable_lora
        pipe.set_adapters(adapters, adapter_weights=list(wanted.values()))
    except BaseException:
        deactivate_loras(pipe)
        raise


def deactivate_loras(pipe: Any) -> None:
    """Switch every adapter off: the pipeline computes exactly what it did before any LoRA was loaded."""
    if _cache(pipe, create=False) is not None:
        pipe.disable_lora()


def merge_loras(loras: Sequence[LoraSpec]) -> dict[str, float]:
    """File name -> total weight, in first-seen order, without empty slots and zero weights."""
    merged: dict[str, float] = {}
    for lora in loras:
        if lora.name not in _EMPTY_SLOTS and lora.weight != 0:
            merged[lora.name] = merged.get(lora.name, 0.0) + float(lora.weight)
    return {name: weight for name, weight in merged.items() if weight != 0}


def adapter_name(file_name: str, path: Path) -> str:
    """A peft adapter name for this version of the file: a replaced file (size, mtime) gets a new one.

    Names become ModuleDict keys and are matched by substring inside diffusers/peft, so they are
    restricted to [A-Za-z0-9_], start with a letter and end in a hash that keeps them distinct.
    """
    stat = path.stat()
    digest = hashlib.sha1(f"{file_name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    stem = re.sub(r"[^0-9A-Za-z]+", "_", Path(file_name).stem).strip("_")[:40]
    if not stem[:1].isalpha():
        stem = "lora" + stem
    return f"{stem}_{digest}"


# -- loading and eviction ------------------------------------------------------------------------
def _cache(pipe: Any, *, create: bool = True) -> _AdapterCache | None:
    cache = getattr(pipe.unet, _CACHE_ATTR, None)
    if cache is None and create:
        cache = _AdapterCache()
        setattr(pipe.unet, _CACHE_ATTR, cache)
    return cache


def _ensure_loaded(pipe: Any, paths: Mapping[str, Path], max_cached: int) -> list[str]:
    """The adapter names for `paths` (same order), loading missing ones after making room for them."""
    cache = _cache(pipe)
    assert cache is not None
    names = {file_name: adapter_name(file_name, path) for file_name, path in paths.items()}
    missing = [file_name for file_name, name in names.items() if name not in cache.adapters]
    _evict(pipe, cache, keep=set(names.values()), replaced=set(paths), room=len(missing), max_cached=max_cached)
    for file_name in missing:
        _load(pipe, file_name, paths[file_name], names[file_name])
        cache.adapters[names[file_name]] = file_name
    for name in names.values():
        cache.adapters.move_to_end(name)
    return list(names.values())


def _evict(pipe: Any, cache: _AdapterCache, *, keep: set[str], replaced: set[str], room: int, max_cached: int) -> None:
    """Delete older versions of the files in `replaced`, then least recently used adapters until `room` fits."""
    doomed = [name for name, file_name in cache.adapters.items() if file_name in replaced and name not in keep]
    candidates = [name for name in cache.adapters if name not in keep and name not in doomed]
    excess = len(cache.adapters) - len(doomed) + room - max_cached
    doomed += candidates[: max(excess, 0)]
    if doomed:
        _delete_adapters(pipe, doomed)
        for name in doomed:
            del cache.adapters[name]


def _load(pipe: Any, file_name: str, path: Path, name: str) -> None:
    """Load one file as adapter `name`; on failure nothing of it stays on the pipeline."""
    expected = _count_file_layers(file_name, path)
    try:
        with _quiet_loading():
            pipe.load_lora_weights(str(path), adapter_name=name)
    except Exception as exc:
        _delete_adapters(pipe, [name])  # the UNet may have loaded before a text encoder failed
        raise LoraUnsupported(file_name, _explain(exc)) from exc
    loaded = sum(1 for _ in _layers_with(pipe, name))
    if loaded == 0:  # diffusers skips keys of unknown models (other prefixes) without a word
        _delete_adapters(pipe, [name])
        raise LoraUnsupported(file_name, "does not fit this model: no keys matched (a LoRA for another model type?)")
    if loaded < expected:  # Fooocus, too, applies the keys that match and skips the rest
        log.warning("lora.partial_match", lora=file_name, matched_layers=loaded, file_layers=expected)


def _count_file_layers(file_name: str, path: Path) -> int:
    """How many layers the file adapts, from the header alone; refuses files that are no LoRA."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise LoraUnsupported(file_name, f"is not a readable .safetensors file ({exc})") from exc
    count = sum(1 for key in keys if _LAYER_KEY.search(key))
    if count == 0:
        raise LoraUnsupported(file_name, "is not a LoRA file (no lora_down / lora_A weights in it)")
    return count


def _explain(exc: Exception) -> str:
    """diffusers' and peft's load errors, shortened to one line that says why."""
    text = str(exc)
    mismatches = list(_SIZE_MISMATCH.finditer(text))
    if mismatches:
        first = mismatches[0]
        layer = re.sub(r"\.lora_[AB]\..*$", "", first["param"])
        return (
            f"does not fit this model: {len(mismatches)} layer(s) have other shapes, e.g. {layer} is "
            f"{first['file']} in the file but {first['model']} here (a LoRA for another base model, like SD 1.5?)"
        )
    if "ignore_mismatched_sizes" in text:  # transformers: the per-key shapes went to its (silenced) report
        return "does not fit this model: its text-encoder layers have other shapes (a LoRA for another base model?)"
    if "not found in the base model" in text:
        return "does not fit this model: no keys matched (a LoRA for another model type?)"
    if "Invalid LoRA checkpoint" in text:
        return "is not a LoRA file"
    first_line = text.strip().splitlines()[0][:200] if text.strip() else ""
    return f"could not be loaded ({type(exc).__name__}: {first_line})"


# -- adapters on the pipeline's modules ----------------------------------------------------------
def _tuner_layers(pipe: Any) -> Iterator[Any]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    for component in _LORA_COMPONENTS:
        model = getattr(pipe, component, None)
        if model is not None:
            yield from (module for module in model.modules() if isinstance(module, BaseTunerLayer))


def _layers_with(pipe: Any, name: str) -> Iterator[Any]:
    return (layer for layer in _tuner_layers(pipe) if name in layer._all_available_adapter_names())


def _delete_adapters(pipe: Any, names: Sequence[str]) -> None:
    """Delete adapters from the UNet and both text encoders.

    They are made inactive first: peft otherwise warns and promotes another loaded adapter to active.
    """
    doomed = set(names)
    for layer in _tuner_layers(pipe):
        active = list(layer.active_adapters)
        remaining = [adapter for adapter in active if adapter not in doomed]
        if remaining != active:
            layer.set_adapter(remaining)
    pipe.delete_adapters(list(names))


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """Silence the loaders' per-key chatter for one load (runner thread only; levels are global)."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        # Each further adapter on a model; and diffusers' own clean-up after a failed load.
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        warnings.filterwarnings("ignore", message=r"Adapter \S+ was active which is now deleted")
        for logger in loggers:
            logger.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)
