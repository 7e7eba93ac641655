"""Model files on disk, their downloads, and the one loaded pipeline kept in memory.

Layout (Fooocus's): `models/checkpoints`, `models/loras`, `models/vae`. A checkpoint is a single
`.safetensors` file in the original LDM layout (what users download), or a diffusers folder.
Everything loads offline: single files get their configs and tokenizers from the folders shipped
in `engine/sdxl/`, picked by the tensor shapes in the file's header.
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final, Literal

import httpx
import huggingface_hub.constants
import torch
from diffusers import StableDiffusionXLPipeline
from diffusers.utils import logging as diffusers_logging
from safetensors import safe_open
from transformers.utils import logging as transformers_logging

from fooocus_es.engine.demo_model import DEMO_CHECKPOINT, ensure_demo_checkpoint

ModelKind = Literal["checkpoints", "loras", "vae"]
MODEL_KINDS: Final[tuple[ModelKind, ...]] = ("checkpoints", "loras", "vae")
MODEL_SUFFIX: Final = ".safetensors"
SDXL_CONFIGS: Final = Path(__file__).resolve().parent / "sdxl"

# SDXL UNets by (conv_in width, add-embedding input width): which shipped config folder fits.
_UNET_CONV_IN: Final = "model.diffusion_model.input_blocks.0.0.weight"
_UNET_ADD_EMBEDDING: Final = "model.diffusion_model.label_emb.0.0.weight"
_CONFIG_BY_SHAPE: Final[dict[tuple[int, int], str]] = {(320, 2816): "base", (32, 80): "tiny"}

_DOWNLOAD_TIMEOUT: Final = httpx.Timeout(30.0, connect=10.0)

ProgressCallback = Callable[[int, int | None], None]


class ModelMissing(Exception):
    """A model file is not on disk (and could not be downloaded); says where to put it."""

    def __init__(self, name: str, path: Path, detail: str | None = None) -> None:
        self.name = name
        self.path = path
        message = f"model file {name!r} not found; put it at {path}"
        if detail:
            message += f" ({detail})"
        super().__init__(message)


class ModelUnsupported(Exception):
    """A model file is there but is not something this server can load (not SDXL, inpaint UNet, ...)."""

    def __init__(self, name: str, path: Path, detail: str) -> None:
        self.name = name
        self.path = path
        super().__init__(f"cannot load {name!r} ({path}): {detail}")


class ModelStore:
    """Files under `models_dir`, and a cache of one loaded pipeline (SDXL does not fit twice on most GPUs)."""

    def __init__(self, models_dir: Path, device: str = "cpu", dtype: torch.dtype | None = None) -> None:
        self.models_dir = models_dir
        self.device = device
        self.dtype = dtype or (torch.float16 if device.startswith("cuda") else torch.float32)
        for kind in MODEL_KINDS:
            (models_dir / kind).mkdir(parents=True, exist_ok=True)
        _force_hub_offline()
        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()
        self._lock = threading.Lock()
        self._pipe: StableDiffusionXLPipeline | None = None
        self._loaded_name: str | None = None

    # -- files -----------------------------------------------------------------------------------
    def folder(self, kind: ModelKind) -> Path:
        return self.models_dir / kind

    def list_checkpoints(self) -> list[str]:
        folders = [p.name for p in self.folder("checkpoints").iterdir() if (p / "model_index.json").is_file()]
        return sorted(self._files("checkpoints") + folders)

    def list_loras(self) -> list[str]:
        return sorted(self._files("loras"))

    def list_vaes(self) -> list[str]:
        return sorted(self._files("vae"))

    def _files(self, kind: ModelKind) -> list[str]:
        # Dot-files are our in-progress writes; .part files are interrupted downloads.
        return [
            p.name
            for p in self.folder(kind).iterdir()
            if p.is_file() and p.suffix == MODEL_SUFFIX and not p.name.startswith(".")
        ]

    def path(self, kind: ModelKind, name: str) -> Path:
        """Where `name` lives (or would live) in `kind`'s folder; refuses names that leave it."""
        if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name or name.startswith("."):
            raise ValueError(f"invalid model file name {name!r}: a plain file name is expected")
        return self.folder(kind) / name

    def checkpoint_path(self, name: str) -> Path:
        """The checkpoint file or folder; the demo checkpoint is generated here on first use."""
        path = self.path("checkpoints", name)
        if name == DEMO_CHECKPOINT and not path.exists():
            return ensure_demo_checkpoint(self.folder("checkpoints"))
        if not (path.is_file() or (path / "model_index.json").is_file()):
            raise ModelMissing(name, path)
        return path

    # -- the loaded pipeline ---------------------------------------------------------------------
    @property
    def loaded_name(self) -> str | None:
        return self._loaded_name

    def load_pipeline(self, name: str) -> StableDiffusionXLPipeline:
        """The pipeline for checkpoint `name`, loading it (and dropping any other) when needed."""
        with self._lock:
            if self._pipe is not None and self._loaded_name == name:
                return self._pipe
            path = self.checkpoint_path(name)
            self._free_locked()  # before loading: two SDXL models rarely fit at once
            pipe = self._load(name, path)
            self._pipe, self._loaded_name = pipe, name
            return pipe

    def free(self) -> None:
        with self._lock:
            self._free_locked()

    def _free_locked(self) -> None:
        if self._pipe is None:
            return
        pipe, self._pipe, self._loaded_name = self._pipe, None, None
        del pipe
        gc.collect()
        if self.device.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _load(self, name: str, path: Path) -> StableDiffusionXLPipeline:
        common = {"dtype": self.dtype, "local_files_only": True, "add_watermarker": False}
        if path.is_dir():
            pipe = StableDiffusionXLPipeline.from_pretrained(path, **common)
        else:
            config = sdxl_config_for(name, path)
            pipe = StableDiffusionXLPipeline.from_single_file(str(path), config=str(config), **common)
        if self.dtype == torch.float16 and pipe.vae.config.force_upcast:
            # SDXL's VAE overflows in float16. Keeping it in float32 for good costs ~160 MB and
            # spares casting the shared module back and forth around every decode.
            pipe.vae.float()
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(self.device)

    # -- downloads -------------------------------------------------------------------------------
    def download(self, name: str, url: str, kind: ModelKind, on_progress: ProgressCallback | None = None) -> Path:
        """Fetch `url` into `kind`'s folder as `name`, resuming an interrupted `.part` file.

        `on_progress(bytes_done, bytes_total_or_None)` is called as data arrives. Failures raise
        ModelMissing naming the file, the URL and where to put the file by hand.
        """
        target = self.path(kind, name)
        if target.is_file():
            return target
        part = target.with_name(target.name + ".part")
        try:
            _fetch_resumable(url, part, on_progress or _ignore_progress)
        except (httpx.HTTPError, OSError) as exc:
            raise ModelMissing(name, target, f"download from {url} failed: {exc}") from exc
        os.replace(part, target)
        return target


def sdxl_config_for(name: str, path: Path) -> Path:
    """The shipped config folder matching a single-file checkpoint, judged from its header only."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = set(handle.keys())
            if _UNET_CONV_IN not in keys:
                raise ModelUnsupported(name, path, "no SDXL UNet in this file (model.diffusion_model.* missing)")
            conv_in = handle.get_slice(_UNET_CONV_IN).get_shape()
            add_embedding = handle.get_slice(_UNET_ADD_EMBEDDING).get_shape() if _UNET_ADD_EMBEDDING in keys else None
    except ModelUnsupported:
        raise
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ModelUnsupported(name, path, f"not a readable .safetensors file: {exc}") from exc
    if add_embedding is None:
        raise ModelUnsupported(name, path, f"not an SDXL checkpoint (UNet width {conv_in[0]}, no SDXL size embedding)")
    if conv_in[1] != 4:
        raise ModelUnsupported(
            name, path, f"UNet takes {conv_in[1]} input channels; only 4 (text-to-image) is supported"
        )
    variant = _CONFIG_BY_SHAPE.get((conv_in[0], add_embedding[1]))
    if variant is None:
        raise ModelUnsupported(
            name, path, f"unknown SDXL variant (UNet width {conv_in[0]}, size embedding {add_embedding[1]})"
        )
    return SDXL_CONFIGS / variant


def _force_hub_offline() -> None:
    """The server never reaches a model hub: a load that would fetch something must fail instead.

    huggingface_hub reads HF_HUB_OFFLINE once, when it is imported (already done by diffusers), so
    the environment variable alone would only reach child processes: set its constant too.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    huggingface_hub.constants.HF_HUB_OFFLINE = True


def _ignore_progress(done: int, total: int | None) -> None:
    pass


def _fetch_resumable(url: str, part: Path, on_progress: ProgressCallback) -> None:
    """Stream `url` into `part`, continuing from its current size with an HTTP Range request."""
    offset = part.stat().st_size if part.exists() else 0
    # identity: a Range counts bytes as sent, so a compressed body could not be resumed.
    headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={offset}-"} if offset else {})}
    with httpx.stream("GET", url, headers=headers, follow_redirects=True, timeout=_DOWNLOAD_TIMEOUT) as response:
        if offset and response.status_code == 416:
            if _range_total(response) == offset:
                on_progress(offset, offset)  # the previous attempt had already received everything
                return
            stale = True
        else:
            stale = False
            _stream_into(response, part, offset, on_progress)
    if stale:  # a .part that does not fit this file: start over (no Range header, so no 416)
        part.unlink()
        _fetch_resumable(url, part, on_progress)


def _stream_into(response: httpx.Response, part: Path, offset: int, on_progress: ProgressCallback) -> None:
    response.raise_for_status()
    resumed = response.status_code == 206
    if resumed and _range_start(response) != offset:
        raise OSError(f"asked for bytes from {offset}, got {response.headers.get('content-range')!r}")
    if not resumed:
        offset = 0  # the server ignored the Range header: start over
    length = response.headers.get("content-length")
    total = offset + int(length) if length is not None else None
    done = offset
    on_progress(done, total)
    with part.open("ab" if resumed else "wb") as out:
        for chunk in response.iter_bytes():  # as it arrives: a fixed chunk size would lose a partial tail
            out.write(chunk)
            done += len(chunk)
            on_progress(done, total)
    if total is not None and done != total:
        raise OSError(f"connection closed after {done} of {total} bytes")


def _range_start(response: httpx.Response) -> int | None:
    """Start offset from `Content-Range: bytes START-END/TOTAL`."""
    value = response.headers.get("content-range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _range_total(response: httpx.Response) -> int | None:
    """TOTAL from `Content-Range: bytes */TOTAL` (a 416 answer)."""
    value = response.headers.get("content-range", "")
    try:
        return int(value.rsplit("/", 1)[1])
    except (IndexError, ValueError):
        return None
