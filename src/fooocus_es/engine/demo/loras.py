"""LoRA files for the tiny demo model, in the kohya/A1111 layout users' LoRAs have.

The demo checkpoint gets its own "performance LoRAs" (LCM, Lightning, Hyper-SD) so that Extreme
Speed, Lightning and Hyper-SD run offline through the very loading path real LoRAs take. They are
random (rank 4, small) like the demo model itself: they change its output, they distil nothing.

`write_kohya_lora` is the general writer behind them, also used by tests to build LoRAs of any
shape. Keys follow kohya's SDXL naming: LDM block names (`input_blocks.4.1...`) flattened with `_`,
`lora_unet_`/`lora_te1_`/`lora_te2_` prefixes, and `.lora_down.weight`, `.lora_up.weight`, `.alpha`.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from fooocus_es.engine.demo.checkpoint import TINY_CONFIG_DIR
from fooocus_es.engine.planning.demo_names import DEMO_PERFORMANCE_LORAS

if TYPE_CHECKING:
    import torch

# Their own names (not Fooocus's): a real checkpoint must never pick up these tiny files.
DEMO_LORA_NAMES: Final[tuple[str, ...]] = tuple(DEMO_PERFORMANCE_LORAS.values())
UNET_ATTENTION_TARGETS: Final = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_ATTENTION_TARGETS: Final = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj")
_DEMO_SCALE: Final = 0.1  # entries of ~0.02 in each weight delta: visible, and images stay finite
_DEMO_RANK: Final = 4


def ensure_demo_lora(loras_dir: Path, name: str) -> Path | None:
    """Write `loras_dir/name` if it is one of the demo performance LoRAs and not there yet.

    Returns its path, or None for any other name. The bytes depend only on the name.
    """
    if name not in DEMO_LORA_NAMES:
        return None
    path = loras_dir / name
    if path.exists():
        return path
    seed = zlib.crc32(name.encode())  # stable across runs and Python versions, unlike hash()
    return write_kohya_lora(path, _demo_unet_skeleton(), seed=seed, rank=_DEMO_RANK, scale=_DEMO_SCALE)


def write_kohya_lora(
    path: Path,
    unet: torch.nn.Module,
    *,
    seed: int,
    rank: int = 4,
    scale: float = 0.1,
    alpha: float | None = None,
    text_encoders: Sequence[torch.nn.Module] = (),
    unet_targets: Sequence[str] = UNET_ATTENTION_TARGETS,
    text_targets: Sequence[str] = TEXT_ATTENTION_TARGETS,
) -> Path:
    """Write a random kohya-format LoRA for `unet` (and optionally [text_encoder, text_encoder_2]).

    Only module names and shapes are read, so meta-device models and models that already carry
    peft adapters work. Down and up matrices are N(0, scale^2); alpha defaults to the rank
    (scale factor 1). The file is written atomically and is the same for the same arguments.
    """
    import torch

    from fooocus_es.engine.models.ldm_convert import save_checkpoint

    generator = torch.Generator().manual_seed(seed)  # a private RNG: the global one is untouched
    alpha_tensor = torch.tensor(float(alpha if alpha is not None else rank))
    state: dict[str, torch.Tensor] = {}
    for key, (in_features, out_features) in _kohya_layers(unet, text_encoders, unet_targets, text_targets):
        state[f"{key}.lora_down.weight"] = torch.randn(rank, in_features, generator=generator) * scale
        state[f"{key}.lora_up.weight"] = torch.randn(out_features, rank, generator=generator) * scale
        state[f"{key}.alpha"] = alpha_tensor.clone()
    if not state:
        raise ValueError("no module of the given models matches the LoRA targets")
    return save_checkpoint(state, path)


def _kohya_layers(
    unet: torch.nn.Module,
    text_encoders: Sequence[torch.nn.Module],
    unet_targets: Sequence[str],
    text_targets: Sequence[str],
) -> Iterator[tuple[str, tuple[int, int]]]:
    """(kohya layer key, (in_features, out_features)) for every targeted linear layer."""
    from fooocus_es.engine.models.ldm_convert import unet_to_ldm

    unet_layers = dict(_linear_layers(unet, unet_targets))
    # unet_to_ldm renames state-dict keys; feed it one placeholder per layer and keep the order.
    ldm_names = unet_to_ldm({f"{name}.weight": None for name in unet_layers}, unet.config)  # type: ignore[dict-item]
    for ldm_key, shape in zip(ldm_names, unet_layers.values(), strict=True):
        yield "lora_unet_" + ldm_key.removesuffix(".weight").replace(".", "_"), shape
    for index, encoder in enumerate(text_encoders, start=1):
        for name, shape in _linear_layers(encoder, text_targets):
            # transformers 5 flattens CLIPTextModel (no `text_model.`); kohya's names always have it.
            full = name if name.startswith("text_model.") else f"text_model.{name}"
            yield f"lora_te{index}_" + full.replace(".", "_"), shape


def _linear_layers(model: torch.nn.Module, targets: Sequence[str]) -> Iterator[tuple[str, tuple[int, int]]]:
    import torch

    for name, module in model.named_modules():
        if not any(name == target or name.endswith("." + target) for target in targets):
            continue
        linear = getattr(module, "base_layer", module)  # a layer peft already wrapped
        if isinstance(linear, torch.nn.Linear):
            yield name, (linear.in_features, linear.out_features)


def _demo_unet_skeleton() -> torch.nn.Module:
    """The demo UNet's layout on the meta device: names and shapes, no memory, no RNG use."""
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(TINY_CONFIG_DIR / "unet"))
