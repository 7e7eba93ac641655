"""A tiny deterministic 4x ESRGAN (RRDBNet) file, so tests and the offline demo have an SR model.

The file holds a plain state dict in the original ESRGAN key layout (`model.0.weight`,
`model.1.sub.0.RDB1.conv1.0.weight`, ...), which spandrel detects as ESRGAN with scale 4, and it
goes through the same loader as users' files. With `fooocus_keys=True` the RDB blocks are named
`residual_block_N` instead, as in Fooocus's own `fooocus_upscaler_s409985e5.bin`.

The weights are near-identity (an identity path through the first, upsampling and last convs plus
small seeded noise), so the demo output looks like a 4x nearest-neighbour enlargement with a
faint texture rather than noise. torch is imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    import torch

DEMO_UPSCALER: Final = "fooocus_es_demo_upscaler.safetensors"
DEMO_SCALE: Final = 4
_NUM_FILTERS: Final = 8
_GROWTH: Final = 32  # spandrel builds every RRDBNet with gc=32, whatever the file holds
_NUM_BLOCKS: Final = 1
_SEED: Final = 20240409


def _identity_(conv_weight: torch.Tensor) -> None:
    """Add a centre-tap identity from input channel i to output channel i (in place)."""
    centre = conv_weight.shape[-1] // 2
    for channel in range(min(conv_weight.shape[0], conv_weight.shape[1])):
        conv_weight[channel, channel, centre, centre] += 1.0


def _layer_shapes() -> dict[str, tuple[int, ...]]:
    """Conv weight shapes of the old-layout RRDBNet, by key prefix (each also has a bias of shape[0])."""
    nf, gc = _NUM_FILTERS, _GROWTH
    shapes: dict[str, tuple[int, ...]] = {"model.0": (nf, 3, 3, 3)}
    for block in range(_NUM_BLOCKS):
        for rdb in (1, 2, 3):
            for conv in range(1, 6):
                out_channels = nf if conv == 5 else gc
                shapes[f"model.1.sub.{block}.RDB{rdb}.conv{conv}.0"] = (out_channels, nf + (conv - 1) * gc, 3, 3)
    shapes[f"model.1.sub.{_NUM_BLOCKS}"] = (nf, nf, 3, 3)  # LR conv closing the trunk
    # Two (nearest upsample, conv, LeakyReLU) stages at model.2-4 and 5-7, then HR conv, act, last conv.
    shapes.update({"model.3": (nf, nf, 3, 3), "model.6": (nf, nf, 3, 3), "model.8": (nf, nf, 3, 3)})
    shapes["model.10"] = (3, nf, 3, 3)
    return shapes


def build_demo_state_dict(*, seed: int = _SEED, noise: float = 0.02) -> dict[str, torch.Tensor]:
    """The demo RRDBNet's state dict (float32, contiguous), identical for the same seed and noise."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for prefix, shape in _layer_shapes().items():
        fan_in = shape[1] * shape[2] * shape[3]
        weight = torch.randn(shape, generator=generator) * (noise / fan_in**0.5)  # noise is per output value
        if not prefix.startswith("model.1."):  # the trunk is a residual branch: only it stays pure noise
            _identity_(weight)
        out[f"{prefix}.weight"] = weight.contiguous()
        out[f"{prefix}.bias"] = (torch.randn(shape[0], generator=generator) * noise * 0.1).contiguous()
    return out


def _to_fooocus_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key.replace(".RDB", ".residual_block_"): value for key, value in state.items()}


def write_demo_upscaler(
    path: Path,
    *,
    seed: int = _SEED,
    kind: Literal["safetensors", "pth"] = "safetensors",
    noise: float = 0.02,
    fooocus_keys: bool = False,
) -> Path:
    """Write the demo 4x ESRGAN to `path` as safetensors or a plain torch.save state dict; returns `path`."""
    import torch
    from safetensors.torch import save_file

    state = build_demo_state_dict(seed=seed, noise=noise)
    if fooocus_keys:
        state = _to_fooocus_keys(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "safetensors":
        save_file(state, str(path))
    elif kind == "pth":
        torch.save(state, path)
    else:
        raise ValueError(f"kind must be 'safetensors' or 'pth', got {kind!r}")
    return path


def ensure_demo_upscaler(upscale_dir: Path) -> Path:
    """Write `upscale_dir/fooocus_es_demo_upscaler.safetensors` unless it is already there; returns its path."""
    path = upscale_dir / DEMO_UPSCALER
    return path if path.exists() else write_demo_upscaler(path)
