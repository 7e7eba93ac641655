"""Super-resolution models for Upscale: files in `models/upscale_models/`, loaded with spandrel.

Fooocus runs one 4x ESRGAN (`fooocus_upscaler_s409985e5.bin`) over the input, then resizes to the
requested factor; "Upscale (Fast 2x)" returns that SR output (resized) directly. Here any spandrel
image-to-image SR architecture with scale > 1 is accepted.

Safety: pickled files (.pth/.pt/.bin/.ckpt) are read only with `torch.load(weights_only=True)`.
spandrel's own file loader is not used: it reads .pth with `pickle_module=` (which turns
weights_only off in torch) and .pt with `torch.jit.load` (TorchScript runs code).
"""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import torch
from PIL import Image

from fooocus_es.engine.imaging.tiling import iter_tiled_rows, round_into_range_

if TYPE_CHECKING:
    from spandrel import ImageModelDescriptor

UPSCALER_SUFFIXES: Final = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
DEFAULT_TILE: Final = 512  # Fooocus's tile and overlap for the SR pass
DEFAULT_OVERLAP: Final = 32

TileProgress = Callable[[int, int], None]


# Same shape as models.ModelMissing / ModelUnsupported (name, path, message). Not subclasses: models.py
# imports diffusers, which an SR-only caller (and its tests) should not have to pay for or depend on.
class UpscalerMissing(Exception):
    """The SR model file is not on disk; the message names the file and the folder it belongs in."""

    def __init__(self, name: str, path: Path, detail: str | None = None) -> None:
        self.name = name
        self.path = path
        message = f"upscale model {name!r} not found; put it in {path.parent}"
        super().__init__(f"{message} ({detail})" if detail else message)


class UpscalerUnsupported(Exception):
    """The file is there but is not a loadable image-to-image SR model (or is an unsafe pickle)."""

    def __init__(self, name: str, path: Path, detail: str) -> None:
        self.name = name
        self.path = path
        super().__init__(f"cannot load upscale model {name!r} ({path}): {detail}")


@dataclass(frozen=True)
class UpscalerModel:
    """A loaded SR model: its file name, integer scale, and the spandrel descriptor that runs it."""

    name: str
    scale: int
    architecture: str
    descriptor: ImageModelDescriptor

    @property
    def device(self) -> torch.device:
        return self.descriptor.device

    @property
    def dtype(self) -> torch.dtype:
        return self.descriptor.dtype

    @property
    def multiple_of(self) -> int:
        return max(1, self.descriptor.size_requirements.multiple_of)


# -- files -----------------------------------------------------------------------------------------


def list_upscalers(folder: Path) -> list[str]:
    """Sorted file names of the SR model files directly in `folder` (empty if it does not exist)."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in UPSCALER_SUFFIXES)


def _read_state_dict(path: Path) -> dict[str, object]:
    """The file's tensors, on the CPU; pickles only through torch's weights-only unpickler."""
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path), device="cpu"))
    if path.suffix.lower() not in UPSCALER_SUFFIXES:
        raise UpscalerUnsupported(path.name, path, f"unknown file type {path.suffix!r}")
    try:
        with warnings.catch_warnings():  # torch warns before refusing a TorchScript archive
            warnings.simplefilter("ignore", UserWarning)
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UpscalerUnsupported(path.name, path, f"refused: {_pickle_refusal(str(exc))}") from exc
    except RuntimeError as exc:
        if "TorchScript" not in str(exc):
            raise
        raise UpscalerUnsupported(path.name, path, "refused: a TorchScript archive carries code") from exc
    if not isinstance(loaded, dict):
        raise UpscalerUnsupported(path.name, path, f"expected a state dict, found {type(loaded).__name__}")
    return loaded


def _pickle_refusal(torch_message: str) -> str:
    """A short reason from torch's weights-only refusal (which also advises turning safety off)."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", torch_message)
    culprit = f" (it references {found.group(1)})" if found else ""
    return f"the pickle needs more than tensors and plain containers to load{culprit}"


def _fooocus_key_names(state_dict: dict[str, object]) -> dict[str, object]:
    """Fooocus's upscaler names its RRDB blocks `residual_block_N`; ESRGAN's layout says `RDBN`."""
    return {key.replace("residual_block_", "RDB"): value for key, value in state_dict.items()}


def _describe(path: Path, state_dict: dict[str, object]) -> ImageModelDescriptor:
    import spandrel

    state_dict = _fooocus_key_names(spandrel.canonicalize_state_dict(state_dict))
    try:
        descriptor = spandrel.ModelLoader("cpu").load_from_state_dict(state_dict)
    except spandrel.UnsupportedModelError as exc:
        raise UpscalerUnsupported(path.name, path, "not a model architecture spandrel knows") from exc
    except Exception as exc:  # detected, but shapes/keys did not fit that architecture
        raise UpscalerUnsupported(path.name, path, f"could not build the model: {exc}") from exc
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.scale <= 1:
        raise UpscalerUnsupported(
            path.name,
            path,
            f"{descriptor.architecture.name} ({descriptor.purpose}, scale {descriptor.scale}) "
            "is not an image-to-image super-resolution model",
        )
    if (descriptor.input_channels, descriptor.output_channels) != (3, 3):
        channels = f"{descriptor.input_channels} -> {descriptor.output_channels}"
        raise UpscalerUnsupported(path.name, path, f"works on {channels} channels, not RGB -> RGB")
    return descriptor


def _supported_dtype(descriptor: ImageModelDescriptor, dtype: torch.dtype) -> torch.dtype:
    """Fall back to float32 where the architecture does not support half precision."""
    if dtype == torch.float16 and not descriptor.supports_half:
        return torch.float32
    if dtype == torch.bfloat16 and not descriptor.supports_bfloat16:
        return torch.float32
    return dtype


def load_upscaler(path: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> UpscalerModel:
    """Load the SR model at `path` onto `device` in `dtype` (float32 where half is unsupported)."""
    if not path.is_file():
        raise UpscalerMissing(path.name, path)
    try:
        state_dict = _read_state_dict(path)
    except UpscalerUnsupported:
        raise
    except Exception as exc:  # truncated or corrupt file, TorchScript archive, ...
        raise UpscalerUnsupported(path.name, path, f"could not read the file: {exc}") from exc
    descriptor = _describe(path, state_dict)
    descriptor = descriptor.to(device=torch.device(device), dtype=_supported_dtype(descriptor, dtype)).eval()
    return UpscalerModel(
        name=path.name, scale=int(descriptor.scale), architecture=descriptor.architecture.name, descriptor=descriptor
    )


# -- running ---------------------------------------------------------------------------------------


def _tile_fn(model: UpscalerModel) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 (h, w, 3) tile -> float32 (h*s, w*s, 3) in 0..255, through the model."""

    def run(tile: np.ndarray) -> np.ndarray:
        pixels = torch.from_numpy(np.array(tile, dtype=np.uint8)).permute(2, 0, 1)[None]  # a writable copy
        pixels = pixels.to(device=model.device, dtype=model.dtype) / 255.0
        result = model.descriptor(pixels)[0]  # spandrel pads to its size needs and clamps to 0..1
        # Contiguous HWC before leaving the device: the blending reads it row by row.
        return result.float().mul_(255.0).permute(1, 2, 0).contiguous().cpu().numpy()

    return run


def upscale(
    model: UpscalerModel,
    image: Image.Image,
    *,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    on_tile: TileProgress | None = None,
) -> Image.Image:
    """Run `model` over `image` tile by tile; an RGB image exactly `model.scale` times the input size.

    Overlaps are feather-blended (no seams), memory stays bounded at any input size, and
    `on_tile(done, total)` is called after each tile.
    """
    pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    out = Image.new("RGB", (pixels.shape[1] * model.scale, pixels.shape[0] * model.scale))
    rows = iter_tiled_rows(
        pixels,
        _tile_fn(model),
        tile=tile,
        overlap=overlap,
        scale=model.scale,
        multiple=model.multiple_of,
        on_tile=on_tile,
    )
    with torch.inference_mode():
        # Finished rows go straight into the PIL image: no full-size numpy copy of the output.
        for top, finished in rows:
            out.paste(Image.fromarray(round_into_range_(finished, np.uint8)), (0, top))
    return out


def resize_to(image: Image.Image, width: int, height: int) -> Image.Image:
    """`image` resized to exactly `width` x `height` with Lanczos (unchanged if already that size)."""
    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.Resampling.LANCZOS)
