"""Meta's segment-anything `.pth` checkpoints (Fooocus's `sam_vit_*.pth`) as transformers' SamModel.

The renames are the ones transformers' convert_sam_to_hf.py applies (the script is not shipped in the
wheel), written as path rules both ways so the demo model can store a tiny SAM under Meta's names.
The architecture is read from the tensor shapes: one loader for vit_b/l/h and the demo file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import torch
    from transformers import SamConfig

# Meta's config per Fooocus sam_model (transformers' SamVisionConfig() is vit_b).
SAM_VISION_PRESETS: Final[dict[str, dict[str, Any]]] = {
    "vit_b": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
              "global_attn_indexes": [2, 5, 8, 11]},
    "vit_l": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
              "global_attn_indexes": [5, 11, 17, 23]},
    "vit_h": {"hidden_size": 1280, "num_hidden_layers": 32, "num_attention_heads": 16,
              "global_attn_indexes": [7, 15, 23, 31]},
}  # fmt: skip
_PIXEL_MEAN: Final = (123.675, 116.28, 103.53)  # Meta keeps these as buffers; transformers' processor does it
_PIXEL_STD: Final = (58.395, 57.12, 57.375)
_MLP_LAYER: Final = re.compile(r"(iou_prediction_head|output_hypernetworks_mlps\.\d+)\.layers\.(\d+)\.")
_MLP_HF: Final = re.compile(r"(iou_prediction_head|output_hypernetworks_mlps\.\d+)\.(proj_in|proj_out|layers\.(\d+))\.")

# (Meta substring, HF substring), applied in this order Meta -> HF (convert_sam_to_hf's table).
_RENAMES: Final = (
    ("mask_decoder.output_upscaling.0", "mask_decoder.upscale_conv1"),
    ("mask_decoder.output_upscaling.1", "mask_decoder.upscale_layer_norm"),
    ("mask_decoder.output_upscaling.3", "mask_decoder.upscale_conv2"),
    ("mask_downscaling.0", "mask_embed.conv1"),
    ("mask_downscaling.1", "mask_embed.layer_norm1"),
    ("mask_downscaling.3", "mask_embed.conv2"),
    ("mask_downscaling.4", "mask_embed.layer_norm2"),
    ("mask_downscaling.6", "mask_embed.conv3"),
    ("point_embeddings", "point_embed"),
    ("pe_layer.positional_encoding_gaussian_matrix", "shared_embedding.positional_embedding"),
    ("image_encoder", "vision_encoder"),
    ("neck.0", "neck.conv1"),
    ("neck.1", "neck.layer_norm1"),
    ("neck.2", "neck.conv2"),
    ("neck.3", "neck.layer_norm2"),
    ("patch_embed.proj", "patch_embed.projection"),
    (".norm", ".layer_norm"),
    ("blocks", "layers"),
)
_SHARED: Final = "shared_image_embedding.positional_embedding"
_PROMPT_PE: Final = "prompt_encoder.shared_embedding.positional_embedding"


def _mlp_to_hf(match: re.Match[str]) -> str:
    index = int(match.group(2))
    name = {0: "proj_in", 1: "layers.0", 2: "proj_out"}[index]
    return f"{match.group(1)}.{name}."


def meta_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta key names -> SamModel's; drops pixel_mean/std and shares the prompt encoder's Gaussian matrix."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in ("pixel_mean", "pixel_std"):
            continue
        for old, new in _RENAMES:
            key = key.replace(old, new)
        out[_MLP_LAYER.sub(_mlp_to_hf, key)] = value
    if _PROMPT_PE in out:  # SamModel has the matrix twice (image and prompt embeddings); Meta has it once
        out[_SHARED] = out[_PROMPT_PE]
    return out


def _mlp_to_meta(match: re.Match[str]) -> str:
    part = match.group(2)
    index = 0 if part == "proj_in" else 2 if part == "proj_out" else int(match.group(3)) + 1
    return f"{match.group(1)}.layers.{index}."


_INVERSE: Final = (
    (r"^vision_encoder\.", "image_encoder."),
    (r"^image_encoder\.layers\.", "image_encoder.blocks."),
    (r"patch_embed\.projection", "patch_embed.proj"),
    (r"neck\.conv1", "neck.0"), (r"neck\.layer_norm1", "neck.1"),
    (r"neck\.conv2", "neck.2"), (r"neck\.layer_norm2", "neck.3"),
    (r"mask_embed\.conv1", "mask_downscaling.0"), (r"mask_embed\.layer_norm1", "mask_downscaling.1"),
    (r"mask_embed\.conv2", "mask_downscaling.3"), (r"mask_embed\.layer_norm2", "mask_downscaling.4"),
    (r"mask_embed\.conv3", "mask_downscaling.6"),
    (r"point_embed\.", "point_embeddings."),
    (r"shared_embedding\.positional_embedding", "pe_layer.positional_encoding_gaussian_matrix"),
    (r"upscale_conv1", "output_upscaling.0"), (r"upscale_layer_norm", "output_upscaling.1"),
    (r"upscale_conv2", "output_upscaling.3"),
    (r"\.layer_norm", ".norm"),  # only block/decoder norms are left with this name by now
)  # fmt: skip


def hf_to_meta(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SamModel's key names -> Meta's (the inverse of meta_to_hf), with Meta's pixel buffers."""
    import torch

    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == _SHARED:
            continue
        key = _MLP_HF.sub(_mlp_to_meta, key)
        for pattern, new in _INVERSE:
            key = re.sub(pattern, new, key)
        out[key] = value
    out["pixel_mean"] = torch.tensor(_PIXEL_MEAN).view(3, 1, 1)
    out["pixel_std"] = torch.tensor(_PIXEL_STD).view(3, 1, 1)
    return out


def _count(state: dict[str, torch.Tensor], prefix: str) -> int:
    return len({key[len(prefix) :].split(".")[0] for key in state if key.startswith(prefix)})


def sam_config_from_state(state: dict[str, torch.Tensor]) -> SamConfig:
    """SamConfig read off an HF-named state dict: Meta files carry no config, the demo's sizes differ.

    Vision heads come from rel_pos (its width is the head dim); windowed blocks have 2*window-1 rows,
    global ones 2*grid-1. The mask decoder's 8 heads are not in the shapes: every Meta SAM uses 8.
    """
    from transformers import SamConfig

    patch = state["vision_encoder.patch_embed.projection.weight"]
    hidden, patch_size = patch.shape[0], patch.shape[2]
    grid = state["vision_encoder.pos_embed"].shape[1]
    layers = _count(state, "vision_encoder.layers.")
    rel_rows = [state[f"vision_encoder.layers.{i}.attn.rel_pos_h"].shape for i in range(layers)]
    windowed = [rows for rows, _dim in rel_rows if rows != 2 * grid - 1]
    window = (windowed[0] + 1) // 2 if windowed else 14
    decoder_hidden = state["mask_decoder.iou_token.weight"].shape[1]
    cross = state["mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight"].shape[0]
    vision = {
        "hidden_size": hidden,
        "patch_size": patch_size,
        "image_size": grid * patch_size,
        "num_hidden_layers": layers,
        "num_attention_heads": hidden // rel_rows[0][1],
        "global_attn_indexes": [i for i, (rows, _dim) in enumerate(rel_rows) if rows == 2 * grid - 1],
        "window_size": window,
        "mlp_dim": state["vision_encoder.layers.0.mlp.lin1.weight"].shape[0],
        "output_channels": state["vision_encoder.neck.conv1.weight"].shape[0],
        "num_pos_feats": state[_PROMPT_PE].shape[1],
    }
    prompt = {
        "hidden_size": state["prompt_encoder.no_mask_embed.weight"].shape[1],
        "image_size": grid * patch_size,
        "patch_size": patch_size,
        "mask_input_channels": state["prompt_encoder.mask_embed.conv2.weight"].shape[0],
    }
    decoder = {
        "hidden_size": decoder_hidden,
        "mlp_dim": state["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0],
        "num_hidden_layers": _count(state, "mask_decoder.transformer.layers."),
        "attention_downsample_rate": decoder_hidden // cross,
        "num_multimask_outputs": state["mask_decoder.mask_tokens.weight"].shape[0] - 1,
        "iou_head_hidden_dim": state["mask_decoder.iou_prediction_head.proj_in.weight"].shape[0],
    }
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def load_sam(path: Path, device: str, dtype: torch.dtype) -> Any:
    """SamModel from a Meta `.pth` (or its `{"model": sd}` wrapping) or an HF folder, in eval mode."""
    import torch
    from transformers import SamModel

    if path.is_dir():
        return SamModel.from_pretrained(path, dtype=dtype).to(device).eval()
    raw = torch.load(path, map_location="cpu", weights_only=True)
    state = meta_to_hf(raw.get("model", raw) if isinstance(raw, dict) else raw)
    if "vision_encoder.patch_embed.projection.weight" not in state:
        raise ValueError(f"{path.name} is not a segment-anything checkpoint")
    config = sam_config_from_state(state)
    with torch.device("meta"):
        model = SamModel(config)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval()
