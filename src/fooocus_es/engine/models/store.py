"""Model files on disk, their downloads, and the loaded models kept in memory within a budget.

Layout (Fooocus's): `models/checkpoints`, `models/loras`, `models/vae`. A checkpoint is a single
`.safetensors` file in the original LDM layout (what users download), or a diffusers folder.
Everything loads offline: single files get their configs and tokenizers from the folders shipped
in `engine/models/sdxl/`, picked by the tensor shapes in the file's header.
"""

from __future__ import annotations

import gc
import math
import os
import resource
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import httpx
import structlog
from safetensors import safe_open

from fooocus_es.engine.demo.checkpoint import ensure_demo_checkpoint
from fooocus_es.engine.models.catalog import MODEL_KINDS, MODEL_SUFFIX, ModelKind, names_on_disk
from fooocus_es.engine.models.safety import (
    SAFETY_CHECKER_FILES,
    SafetyChecker,
    safety_checker_folder,
    safety_checker_installed,
)
from fooocus_es.engine.planning.demo_names import DEMO_CHECKPOINT

if TYPE_CHECKING:
    import torch
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline

    from fooocus_es.engine.models.compile import CompileMode

# torch, diffusers and transformers are imported by the first load, not here: the file side of the
# store (names, paths, downloads) serves an API node of a fleet, which has no torch.

CacheKind = Literal["checkpoints", "vae", "safety_checker"]
SAFETY_CHECKER: Final = "safety_checker"  # the checker's name in the cache, in `keep=` and in reports
SDXL_CONFIGS: Final = Path(__file__).resolve().parent / "sdxl"

# SDXL UNets by (conv_in width, add-embedding input width): which shipped config folder fits.
_UNET_CONV_IN: Final = "model.diffusion_model.input_blocks.0.0.weight"
_UNET_ADD_EMBEDDING: Final = "model.diffusion_model.label_emb.0.0.weight"
_CONFIG_BY_SHAPE: Final[dict[tuple[int, int], str]] = {(320, 2816): "base", (32, 80): "tiny"}
# SDXL VAEs by (encoder conv_in width, encoder conv_out channels = 2 x latent channels). Standalone
# files carry bare LDM (or diffusers) keys; some keep the checkpoint's `first_stage_model.` prefix.
_VAE_PREFIXES: Final = ("", "first_stage_model.", "vae.")
_VAE_CONV_IN: Final = "encoder.conv_in.weight"
_VAE_CONV_OUT: Final = "encoder.conv_out.weight"
_VAE_CONFIG_BY_SHAPE: Final[dict[tuple[int, int], str]] = {(128, 8): "base", (8, 8): "tiny"}

_DOWNLOAD_TIMEOUT: Final = httpx.Timeout(30.0, connect=10.0)

log = structlog.get_logger("fooocus_es.models")

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


@dataclass
class _Cached:
    kind: CacheKind
    name: str
    model: Any  # StableDiffusionXLPipeline | AutoencoderKL | SafetyChecker; None once released
    nbytes: int

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "bytes": self.nbytes}


class ModelStore:
    """Files under `models_dir`, and the loaded models: pipelines, VAEs and the safety checker.

    Loaded models stay cached, least recently used first out, within `cache_bytes` (parameter and
    buffer sizes). None (or 0) keeps only what the current load needs, so two SDXL models are
    never held at once: the safe default on a GPU. The cache only forgets models: a task that
    still holds a pipeline keeps using it, and the memory returns once the task lets go.
    """

    def __init__(
        self,
        models_dir: Path,
        device: str = "cpu",
        dtype: torch.dtype | None = None,
        cache_bytes: int | None = None,
        load_lock: threading.RLock | None = None,
        compile_mode: CompileMode = "off",
    ) -> None:
        """`load_lock`: one lock for every store of a process (one runner per device). Loading
        patches torch process-wide (accelerate's and peft's init_empty_weights swap
        nn.Module.register_parameter for the duration), so two loads at once leave it swapped for
        good and every later model gets meta or garbage weights; loads, LoRA loads and the other
        model constructions of the engine (`construction` holders) take this lock."""
        self.models_dir = models_dir
        self.device = device
        self._dtype = dtype
        self.cache_bytes = cache_bytes or None
        self.compile_mode: CompileMode = compile_mode  # --compile: each loaded UNet (engine/models/compile.py)
        for kind in MODEL_KINDS:
            (models_dir / kind).mkdir(parents=True, exist_ok=True)
        safety_checker_folder(models_dir).mkdir(parents=True, exist_ok=True)
        self._quieted = False
        # Two locks: _load_lock makes loads one at a time (minutes, for a large model); _lock guards
        # the cache itself and is held only briefly, so memory reports and free() never wait for a load.
        self._load_lock = load_lock or threading.RLock()
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[CacheKind, str], _Cached] = OrderedDict()  # oldest use first
        # Models kept outside the cache (image prompt models, the tools, the V2 expansion): name -> free.
        self._holders: dict[str, Callable[[], None]] = {}

    @property
    def construction(self) -> threading.RLock:
        """The lock every model load and construction in this process takes (see __init__)."""
        return self._load_lock

    @property
    def dtype(self) -> torch.dtype:
        if self._dtype is None:
            import torch

            self._dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        return self._dtype

    def _prepare_loaders(self) -> None:
        """Once, before the first load: hubs offline, progress bars off (this imports diffusers)."""
        if self._quieted:
            return
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        _force_hub_offline()
        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()
        self._quieted = True

    # -- files -----------------------------------------------------------------------------------
    def folder(self, kind: ModelKind) -> Path:
        return self.models_dir / kind

    def list_checkpoints(self) -> list[str]:
        return names_on_disk(self.models_dir, "checkpoints")

    def list_loras(self) -> list[str]:
        return names_on_disk(self.models_dir, "loras")

    def list_vaes(self) -> list[str]:
        return names_on_disk(self.models_dir, "vae")

    def safety_checker_installed(self) -> bool:
        return safety_checker_installed(self.models_dir)

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

    def vae_path(self, name: str) -> Path:
        path = self.path("vae", name)
        if not path.is_file():
            raise ModelMissing(name, path)
        return path

    def safety_checker_path(self) -> Path:
        folder = safety_checker_folder(self.models_dir)
        if not self.safety_checker_installed():
            raise ModelMissing(SAFETY_CHECKER, folder, "a Hugging Face folder with " + ", ".join(SAFETY_CHECKER_FILES))
        return folder

    # -- loaded models ---------------------------------------------------------------------------
    @property
    def loaded_name(self) -> str | None:
        """The checkpoint used last, if it is still loaded."""
        with self._lock:
            names = [name for kind, name in self._cache if kind == "checkpoints"]
        return names[-1] if names else None

    def load_pipeline(self, name: str, *, keep: Collection[str] = ()) -> StableDiffusionXLPipeline:
        """The pipeline for checkpoint `name`, loaded unless cached; models named in `keep` stay cached."""
        return self._cached_or_load("checkpoints", name, keep, self.checkpoint_path, self._load)

    def load_vae(self, name: str, *, keep: Collection[str] = ()) -> AutoencoderKL:
        """The VAE file `name` from `models/vae/`, loaded unless cached; models named in `keep` stay cached."""
        return self._cached_or_load("vae", name, keep, self.vae_path, self._load_vae)

    def load_safety_checker(self, *, keep: Collection[str] = ()) -> SafetyChecker:
        """The checker in `models/safety_checker/` (cached under the name SAFETY_CHECKER)."""
        return self._cached_or_load(
            "safety_checker", SAFETY_CHECKER, keep, lambda _name: self.safety_checker_path(), self._load_checker
        )

    def hold_outside(self, name: str, free: Callable[[], None]) -> None:
        """Register models an engine keeps outside the cache, so free() drops them too."""
        with self._lock:
            self._holders[name] = free

    def free(self) -> dict[str, Any]:
        """Forget every loaded model: {"freed": [{kind, name, bytes}, ...], "freed_bytes": total}.

        The holders' models go too (a task running on one keeps its own reference until it ends)."""
        with self._lock:
            entries = list(self._cache.values())
            self._cache.clear()
            holders = list(self._holders.items())
        freed = [entry.describe() for entry in entries]
        for name, release in holders:
            release()
            log.info("model.unloaded", kind="holder", model=name)
        self._release(entries)
        if not entries and holders:
            gc.collect()  # _release returns early with no cache entries
        return {"freed": freed, "freed_bytes": sum(item["bytes"] for item in freed)}

    def memory_report(self) -> dict[str, Any]:
        """Loaded models (least recently used first), the budget, the process's RSS and CUDA memory."""
        with self._lock:
            models = [entry.describe() for entry in self._cache.values()]
        rss = _process_rss_bytes()
        return {
            "device": self.device,
            "budget_bytes": self.cache_bytes,
            "cached_bytes": sum(item["bytes"] for item in models),
            "models": models,
            "process_rss_bytes": rss,
            # The kernel updates its high-water mark lazily: it can lag behind the current RSS.
            "process_peak_rss_bytes": max(_process_peak_rss_bytes(), rss or 0),
            "cuda": _cuda_memory(self.device),
        }

    def _cached_or_load(
        self,
        kind: CacheKind,
        name: str,
        keep: Collection[str],
        locate: Callable[[str], Path],
        load: Callable[[str, Path], Any],
    ) -> Any:
        key = (kind, name)
        protected = {*keep, name}
        with self._load_lock:
            cached = self._touch(key)
            if cached is not None:
                return cached
            path = locate(name)
            # Room first, from the size the file's header promises: a GPU cannot hold old and new at once.
            self._release(self._evict(self._limit(_estimated_bytes(path, self.dtype)), protected))
            model = load(name, path)
            entry = _Cached(kind, name, model, model_bytes(model))
            with self._lock:
                self._cache[key] = entry
            log.info("model.loaded", kind=kind, model=name, bytes=entry.nbytes)
            self._release(self._evict(self._limit(0), protected))  # the real size may exceed the estimate
            return model

    def _touch(self, key: tuple[CacheKind, str]) -> Any | None:
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                return None
            self._cache.move_to_end(key)
            return entry.model

    def _limit(self, incoming: int) -> int:
        """Bytes the cache may keep while `incoming` more are loaded; 0 without a budget (only `keep` stays)."""
        return 0 if self.cache_bytes is None else self.cache_bytes - incoming

    def _evict(self, limit: int, protected: set[str]) -> list[_Cached]:
        """Drop least recently used entries not named in `protected` until the cache holds `limit` bytes or less."""
        evicted: list[_Cached] = []
        with self._lock:
            total = sum(entry.nbytes for entry in self._cache.values())
            for key, entry in list(self._cache.items()):
                if total <= limit:
                    break
                if entry.name in protected:
                    continue
                del self._cache[key]
                total -= entry.nbytes
                evicted.append(entry)
        return evicted

    def _release(self, entries: list[_Cached]) -> None:
        """Drop the cache's references and give the memory back, if nothing else holds those models."""
        if not entries:
            return
        for entry in entries:
            # Logged: a cache too small for the workload shows up as models unloaded and loaded again.
            log.info("model.unloaded", kind=entry.kind, model=entry.name, bytes=entry.nbytes)
            entry.model = None
        entries.clear()
        gc.collect()
        if self.device.startswith("cuda"):
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def _load(self, name: str, path: Path) -> StableDiffusionXLPipeline:
        import torch
        from diffusers import StableDiffusionXLPipeline

        self._prepare_loaders()
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
        pipe = pipe.to(self.device)
        if self.compile_mode != "off":
            from fooocus_es.engine.models.compile import compile_unet

            compile_unet(pipe.unet, self.compile_mode, name=name)
        return pipe

    def _load_vae(self, name: str, path: Path) -> AutoencoderKL:
        import torch
        from diffusers import AutoencoderKL

        self._prepare_loaders()
        config = vae_config_for(name, path)
        upcast = self.dtype == torch.float16 and AutoencoderKL.load_config(config / "vae").get("force_upcast", False)
        try:
            vae = AutoencoderKL.from_single_file(
                str(path), config=str(config), subfolder="vae", dtype=torch.float32 if upcast else self.dtype,
                local_files_only=True,
            )  # fmt: skip
        except Exception as exc:  # diffusers raises assorted errors for tensors that do not fit the config
            raise ModelUnsupported(name, path, f"not a loadable SDXL VAE: {exc}") from exc
        if any(parameter.is_meta for parameter in vae.parameters()):
            raise ModelUnsupported(name, path, "some VAE weights are missing from the file")
        return vae.to(self.device).eval()

    def _load_checker(self, name: str, path: Path) -> SafetyChecker:
        self._prepare_loaders()
        try:
            return SafetyChecker.load(path, self.device, self.dtype)
        except Exception as exc:  # transformers raises assorted errors for a broken folder
            raise ModelUnsupported(name, path, f"not a loadable safety checker: {exc}") from exc

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


def vae_config_for(name: str, path: Path) -> Path:
    """The shipped config folder (its `vae/` subfolder) matching a VAE file, judged from its header only."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = set(handle.keys())
            prefix = next((p for p in _VAE_PREFIXES if p + _VAE_CONV_IN in keys and p + _VAE_CONV_OUT in keys), None)
            if prefix is None:
                raise ModelUnsupported(name, path, f"no VAE encoder in this file ({_VAE_CONV_IN} missing)")
            conv_in = handle.get_slice(prefix + _VAE_CONV_IN).get_shape()
            conv_out = handle.get_slice(prefix + _VAE_CONV_OUT).get_shape()
    except ModelUnsupported:
        raise
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ModelUnsupported(name, path, f"not a readable .safetensors file: {exc}") from exc
    variant = _VAE_CONFIG_BY_SHAPE.get((conv_in[0], conv_out[0]))
    if variant is None:
        raise ModelUnsupported(
            name, path, f"not an SDXL VAE (encoder width {conv_in[0]}, {conv_out[0] // 2} latent channels)"
        )
    return SDXL_CONFIGS / variant


def model_bytes(model: Any) -> int:
    """Parameter and buffer bytes of a pipeline, a torch module or a SafetyChecker (shared tensors once)."""
    seen: set[int] = set()
    total = 0
    for module in _torch_modules(model):
        for tensor in (*module.parameters(), *module.buffers()):
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total


def _torch_modules(model: Any) -> list[torch.nn.Module]:
    import torch

    if isinstance(model, torch.nn.Module):
        return [model]
    if isinstance(model, SafetyChecker):
        return [model.model]
    components = getattr(model, "components", {})  # a diffusers pipeline
    return [part for part in components.values() if isinstance(part, torch.nn.Module)]


def _estimated_bytes(path: Path, dtype: torch.dtype) -> int:
    """What loading `path` in `dtype` will take, from the .safetensors headers (0 when unreadable)."""
    files = [path] if path.is_file() else sorted(path.rglob(f"*{MODEL_SUFFIX}"))
    try:
        return dtype.itemsize * sum(_tensor_elements(file) for file in files)
    except Exception:  # the loader reports broken files properly; an estimate just gives up
        return 0


def _tensor_elements(path: Path) -> int:
    with safe_open(str(path), framework="pt") as handle:
        names = handle.keys()  # safe_open handles are not iterable
        return sum(math.prod(handle.get_slice(key).get_shape()) for key in names)


def _process_rss_bytes() -> int | None:
    """Resident memory now (Linux), None where /proc is not there."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def _process_peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def _cuda_memory(device: str) -> dict[str, int] | None:
    """The torch allocator's view of the device, None off CUDA."""
    if not device.startswith("cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info(device)
    return {
        "allocated_bytes": torch.cuda.memory_allocated(device),
        "reserved_bytes": torch.cuda.memory_reserved(device),
        "free_bytes": free,
        "total_bytes": total,
    }


def _force_hub_offline() -> None:
    """The server never reaches a model hub: a load that would fetch something must fail instead.

    huggingface_hub reads HF_HUB_OFFLINE once, when it is imported (already done by diffusers), so
    the environment variable alone would only reach child processes: set its constant too.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    import huggingface_hub.constants

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
