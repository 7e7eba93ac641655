"""`--compile`: the UNet under torch.compile, guarded by a fidelity check against eager.

The UNet is compiled in place (`nn.Module.compile`), so the pipeline, LoRA loading (peft), the
ControlNet copy and the project's GuidedUNet wrapper all keep the module they know; dynamo
recompiles when a task changes the module (a LoRA set, image prompt processors) or a shape.
`dynamic=False`: one graph per latent size and batch size (the scheduler's batch key holds them
steady), which is what CUDA graphs (`max-autotune`) need anyway.

The fidelity guard: the first call of each input signature (shapes, dtypes) runs both the eager
module and the compiled graph on the same inputs and compares the outputs; a relative error
above the dtype's tolerance turns compilation off for that signature (logged), and that call
answers the eager output. Compiled kernels reorder float sums, so bit equality is not expected.

The inductor cache (FX graphs, autotuning results) goes to `<data-dir>/cache/torch-compile`
unless TORCHINDUCTOR_CACHE_DIR is set, so a restarted server compiles from a warm cache.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import structlog

if TYPE_CHECKING:  # imported on use: the store's file side runs without torch
    import torch

log = structlog.get_logger("fooocus_es")

CompileMode = Literal["off", "default", "max-autotune"]  # = Settings.compile_mode
# Largest |compiled - eager| / max|eager| accepted on the first call of a signature, by dtype.
TOLERANCE: Final[dict[str, float]] = {"float32": 1e-3, "float16": 2e-2, "bfloat16": 5e-2}
# Graphs kept per module before dynamo falls back to eager (its default of 8 is a few sizes' worth).
RECOMPILE_LIMIT: Final = 64
CACHE_ENV: Final = "TORCHINDUCTOR_CACHE_DIR"


def compile_cache_dir(data_dir: Path) -> Path:
    return data_dir / "cache" / "torch-compile"


def use_compile_cache(data_dir: Path) -> Path:
    """Point inductor's on-disk cache into the data dir (an operator's own setting wins)."""
    folder = Path(os.environ.get(CACHE_ENV) or compile_cache_dir(data_dir))
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault(CACHE_ENV, str(folder))  # inductor reads it at each cache lookup
    return folder


def _signature(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    import torch

    def of(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return (tuple(value.shape), value.dtype, value.device.type)
        if isinstance(value, dict):
            return tuple(sorted((key, of(item)) for key, item in value.items()))
        if isinstance(value, list | tuple):
            return tuple(of(item) for item in value)
        return type(value).__name__  # numbers, flags: a changed value is dynamo's to guard
    return (of(args), of(kwargs))


def _first_tensor(output: Any) -> torch.Tensor:
    import torch

    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple | list):
        return _first_tensor(output[0])
    return output.sample  # UNet2DConditionOutput


def relative_error(candidate: torch.Tensor, reference: torch.Tensor) -> float:
    reference = reference.float()
    scale = reference.abs().max().clamp_min(1e-6)
    return float(((candidate.float() - reference).abs().max() / scale).item())


class FidelityGuard:
    """Stands in for a module's compiled call: checks each new signature once against eager."""

    def __init__(self, compiled: Callable[..., Any], eager: Callable[..., Any], name: str) -> None:
        self.compiled = compiled
        self.eager = eager
        self.name = name
        self.verdicts: dict[tuple[Any, ...], bool] = {}  # signature -> the compiled graph matched eager
        self.errors: dict[tuple[Any, ...], float] = {}
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        key = _signature(args, kwargs)
        with self._lock:
            verdict = self.verdicts.get(key)
        if verdict is True:
            return self.compiled(*args, **kwargs)
        if verdict is False:
            return self.eager(*args, **kwargs)
        reference = self.eager(*args, **kwargs)
        started = time.perf_counter()
        candidate = self.compiled(*args, **kwargs)
        seconds = time.perf_counter() - started
        expected = _first_tensor(reference)
        error = relative_error(_first_tensor(candidate), expected)
        ok = error <= TOLERANCE.get(str(expected.dtype).removeprefix("torch."), TOLERANCE["float16"])
        with self._lock:
            self.verdicts[key], self.errors[key] = ok, error
        event = "compile.checked" if ok else "compile.fidelity_failed"
        (log.info if ok else log.warning)(event, model=self.name, relative_error=round(error, 6),
                                          first_call_s=round(seconds, 2))  # fmt: skip
        return reference


def compile_unet(unet: torch.nn.Module, mode: CompileMode, *, name: str = "unet") -> FidelityGuard | None:
    """Compile `unet` in place behind a FidelityGuard; None (and nothing done) for mode "off"."""
    if mode == "off":
        return None
    import torch._dynamo

    # Process-wide and only ever raised: every device's UNet recompiles per size and LoRA set.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, RECOMPILE_LIMIT)
    eager = unet._call_impl
    unet.compile(mode=None if mode == "default" else mode, dynamic=False)
    # nn.Module.compile stores the compiled callable where __call__ looks first; the guard takes its place.
    guard = FidelityGuard(unet._compiled_call_impl, eager, name)  # type: ignore[arg-type]
    unet._compiled_call_impl = guard  # type: ignore[assignment]
    return guard
