"""diffusers SDXL weights -> the original LDM ("stability") single-file layout that Fooocus users have.

diffusers ships only the other direction (`loaders/single_file_utils.py`). This follows diffusers'
`scripts/convert_diffusers_to_original_sdxl.py` with two fixes, so that `from_single_file` reads back
exactly the tensors written here:
  * the OpenCLIP text projection is stored as `...model.text_projection` (no `.weight`), transposed:
    OpenCLIP multiplies `x @ text_projection`, nn.Linear stores the transpose;
  * transformers >= 5.6 saves `CLIPTextModel` without its `text_model.` prefix, which real files
    have; without it diffusers silently leaves most of the first text encoder random.
Block indices are derived from the UNet config instead of hard-coded, so the tiny demo topology and
real SDXL go through the same code.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import torch
from safetensors.torch import save_file

UNET_PREFIX: Final = "model.diffusion_model."
VAE_PREFIX: Final = "first_stage_model."
CLIP_L_PREFIX: Final = "conditioner.embedders.0.transformer."
OPEN_CLIP_PREFIX: Final = "conditioner.embedders.1.model."

StateDict = dict[str, torch.Tensor]

_UNET_FIXED: Final = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "add_embedding.linear_1.": "label_emb.0.0.",
    "add_embedding.linear_2.": "label_emb.0.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}
# Inside a ResBlock; transformer blocks already share their names with LDM's SpatialTransformer.
_UNET_RESNET: Final = {
    "norm1.": "in_layers.0.",
    "conv1.": "in_layers.2.",
    "norm2.": "out_layers.0.",
    "conv2.": "out_layers.3.",
    "time_emb_proj.": "emb_layers.1.",
    "conv_shortcut.": "skip_connection.",
}


def _unet_prefix_map(config: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(diffusers prefix, LDM prefix) for every block, from the UNet's layout.

    LDM numbers blocks sequentially: input_blocks.0 is conv_in, then per level `layers_per_block`
    [resnet, attention] blocks and one downsampler; output_blocks hold `layers_per_block + 1`
    [resnet, attention, upsampler] blocks per level.
    """
    per_level = config["layers_per_block"]
    down_types, up_types = config["down_block_types"], config["up_block_types"]
    for level, block_type in enumerate(down_types):
        for j in range(per_level):
            index = 1 + level * (per_level + 1) + j
            yield f"down_blocks.{level}.resnets.{j}.", f"input_blocks.{index}.0."
            if block_type.startswith("CrossAttn"):
                yield f"down_blocks.{level}.attentions.{j}.", f"input_blocks.{index}.1."
        if level < len(down_types) - 1:
            yield f"down_blocks.{level}.downsamplers.0.conv.", f"input_blocks.{(level + 1) * (per_level + 1)}.0.op."
    yield "mid_block.resnets.0.", "middle_block.0."
    yield "mid_block.attentions.0.", "middle_block.1."
    yield "mid_block.resnets.1.", "middle_block.2."
    for level, block_type in enumerate(up_types):
        has_attention = block_type.startswith("CrossAttn")
        for j in range(per_level + 1):
            index = level * (per_level + 1) + j
            yield f"up_blocks.{level}.resnets.{j}.", f"output_blocks.{index}.0."
            if has_attention:
                yield f"up_blocks.{level}.attentions.{j}.", f"output_blocks.{index}.1."
        if level < len(up_types) - 1:
            last = level * (per_level + 1) + per_level
            yield f"up_blocks.{level}.upsamplers.0.", f"output_blocks.{last}.{2 if has_attention else 1}."


def unet_to_ldm(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> StateDict:
    """UNet2DConditionModel state dict -> LDM keys (without the `model.diffusion_model.` prefix)."""
    prefixes = sorted(_unet_prefix_map(config), key=lambda pair: -len(pair[0]))
    out: StateDict = {}
    for key, tensor in state.items():
        out[_rename_unet_key(key, prefixes)] = tensor
    return out


def _rename_unet_key(key: str, prefixes: list[tuple[str, str]]) -> str:
    for hf, ldm in _UNET_FIXED.items():
        if key.startswith(hf):
            return ldm + key[len(hf) :]
    for hf, ldm in prefixes:
        if key.startswith(hf):
            rest = key[len(hf) :]
            if ".resnets." in hf:
                rest = _replace_first(rest, _UNET_RESNET)
            return ldm + rest
    raise KeyError(f"no LDM name for UNet tensor {key!r}")


def _replace_first(rest: str, table: Mapping[str, str]) -> str:
    for hf, ldm in table.items():
        if rest.startswith(hf):
            return ldm + rest[len(hf) :]
    return rest


_VAE_ATTENTION: Final = {
    "group_norm.": "norm.",
    "to_q.": "q.",
    "to_k.": "k.",
    "to_v.": "v.",
    "to_out.0.": "proj_out.",
}


def _vae_prefix_map(levels: int, per_level: int) -> Iterator[tuple[str, str]]:
    for level in range(levels):
        for j in range(per_level):
            yield f"encoder.down_blocks.{level}.resnets.{j}.", f"encoder.down.{level}.block.{j}."
        if level < levels - 1:
            yield f"encoder.down_blocks.{level}.downsamplers.0.", f"encoder.down.{level}.downsample."
        # LDM's decoder counts levels from the lowest resolution up; diffusers the other way.
        for j in range(per_level + 1):
            yield f"decoder.up_blocks.{level}.resnets.{j}.", f"decoder.up.{levels - 1 - level}.block.{j}."
        if level < levels - 1:
            yield f"decoder.up_blocks.{level}.upsamplers.0.", f"decoder.up.{levels - 1 - level}.upsample."
    for part in ("encoder", "decoder"):
        yield f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1."
        yield f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2."
        yield f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1."
        yield f"{part}.conv_norm_out.", f"{part}.norm_out."


def vae_to_ldm(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> StateDict:
    """AutoencoderKL state dict -> LDM keys (without the `first_stage_model.` prefix)."""
    prefixes = list(_vae_prefix_map(len(config["down_block_types"]), config["layers_per_block"]))
    out: StateDict = {}
    for key, tensor in state.items():
        new_key = key
        for hf, ldm in prefixes:
            if key.startswith(hf):
                rest = key[len(hf) :]
                if ".attentions." in hf:
                    rest = _replace_first(rest, _VAE_ATTENTION)
                    if tensor.ndim == 2:
                        tensor = tensor[:, :, None, None]  # LDM's attention projections are 1x1 convs
                new_key = ldm + rest.replace("conv_shortcut.", "nin_shortcut.")
                break
        out[new_key] = tensor
    return out


def clip_l_to_ldm(state: Mapping[str, torch.Tensor]) -> StateDict:
    """CLIPTextModel state dict -> `conditioner.embedders.0.transformer.` keys (without the prefix)."""
    return {(key if key.startswith("text_model.") else "text_model." + key): t for key, t in state.items()}


_OPEN_CLIP_LAYER: Final = {
    "layer_norm1.": "ln_1.",
    "layer_norm2.": "ln_2.",
    "mlp.fc1.": "mlp.c_fc.",
    "mlp.fc2.": "mlp.c_proj.",
    "self_attn.out_proj.": "attn.out_proj.",
}


def open_clip_to_ldm(state: Mapping[str, torch.Tensor]) -> StateDict:
    """CLIPTextModelWithProjection state dict -> OpenCLIP keys (without `conditioner.embedders.1.model.`)."""
    state = {key.removeprefix("text_model."): t for key, t in state.items()}
    out: StateDict = {
        "token_embedding.weight": state.pop("embeddings.token_embedding.weight"),
        "positional_embedding": state.pop("embeddings.position_embedding.weight"),
        "ln_final.weight": state.pop("final_layer_norm.weight"),
        "ln_final.bias": state.pop("final_layer_norm.bias"),
        "text_projection": state.pop("text_projection.weight").T.contiguous(),
    }
    state.pop("embeddings.position_ids", None)  # a buffer, not a weight
    layers = sorted({int(key.split(".")[2]) for key in state if key.startswith("encoder.layers.")})
    for i in layers:
        hf, ldm = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            # OpenCLIP's nn.MultiheadAttention keeps q, k and v in one stacked projection.
            parts = [state.pop(f"{hf}self_attn.{p}_proj.{kind}") for p in ("q", "k", "v")]
            out[f"{ldm}attn.in_proj_{kind}"] = torch.cat(parts, dim=0)
        for key in [k for k in state if k.startswith(hf)]:
            out[ldm + _replace_first(key[len(hf) :], _OPEN_CLIP_LAYER)] = state.pop(key)
    if state:
        raise KeyError(f"no OpenCLIP name for text encoder tensors {sorted(state)[:5]}")
    return out


def sdxl_to_ldm(unet: Any, vae: Any, text_encoder: Any, text_encoder_2: Any) -> StateDict:
    """One LDM checkpoint dict from the four diffusers/transformers SDXL models."""
    parts = (
        (UNET_PREFIX, unet_to_ldm(unet.state_dict(), unet.config)),
        (VAE_PREFIX, vae_to_ldm(vae.state_dict(), vae.config)),
        (CLIP_L_PREFIX, clip_l_to_ldm(text_encoder.state_dict())),
        (OPEN_CLIP_PREFIX, open_clip_to_ldm(text_encoder_2.state_dict())),
    )
    return {prefix + key: tensor for prefix, part in parts for key, tensor in part.items()}


def save_checkpoint(state: Mapping[str, torch.Tensor], path: Path) -> Path:
    """Write a .safetensors file atomically: readers never see a half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {key: tensor.detach().contiguous().cpu() for key, tensor in state.items()}
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        save_file(tensors, temp, metadata={"format": "pt"})
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path
