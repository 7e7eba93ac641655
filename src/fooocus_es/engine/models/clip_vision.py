"""CLIP vision (ViT-H) for the IP-Adapters: a safetensors loader for two layouts, and Fooocus's 224 input.

Fooocus's `clip_vision_vit_h.safetensors` is a CLIP vision tower; files of that name exist in the
transformers layout (`vision_model.*`, `visual_projection.weight`) and in OpenCLIP's (`visual.*`,
fused `in_proj` attention). Both load into transformers' `CLIPVisionModelWithProjection`, the
config inferred from the tensor shapes so that the tiny demo file goes through the same code.
Text-tower keys (`text_model.*`, OpenCLIP's top-level text keys) are ignored.

The input is stretched to 224x224 by the caller (no aspect ratio, no centre crop: Fooocus), so
`CLIPImageProcessor` (short-side resize plus crop) is not used; only CLIP's normalisation is.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Final

import numpy as np
import torch
from safetensors import safe_open
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

CLIP_MEAN: Final = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: Final = (0.26862954, 0.26130258, 0.27577711)
HEAD_DIM_BY_WIDTH: Final = {1280: 80, 1664: 104}  # ViT-H/14 and ViT-bigG/14 use 16 heads; others are 64 wide
METADATA_HEADS: Final = "num_attention_heads"  # optional safetensors metadata: heads are not in the shapes
METADATA_ACT: Final = "hidden_act"
_HF_PREFIX: Final = "vision_model."
_OPENCLIP_PREFIX: Final = "visual."
_OPENCLIP_BLOCK = re.compile(r"^visual\.transformer\.resblocks\.(\d+)\.(.+)$")
_OPENCLIP_BLOCK_NAMES: Final = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
    "attn.out_proj": "self_attn.out_proj",
}
_OPENCLIP_TOP_NAMES: Final = {
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
}


def load_clip_vision(path: Path, device: str, dtype: torch.dtype) -> CLIPVisionModelWithProjection:
    """The CLIP vision tower in `path` (either layout), in eval mode on `device` in `dtype`.

    ValueError names what is missing when the file is not a CLIP vision model.
    """
    tensors, metadata = _read(Path(path))
    if any(key.startswith(_OPENCLIP_PREFIX) for key in tensors):
        tensors = openclip_to_transformers(tensors)
    state = {
        key: value
        for key, value in tensors.items()
        if (key.startswith(_HF_PREFIX) or key == "visual_projection.weight") and not key.endswith("position_ids")
    }
    config = infer_config(state, metadata)
    with torch.device("meta"):
        model = CLIPVisionModelWithProjection(config)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [key for key in missing if not key.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"not a CLIP vision model: missing {missing[:8]}, unexpected {unexpected[:8]}")
    embeddings = model.vision_model.embeddings
    # A non-persistent buffer: never in a file, so rebuilt after the meta construction.
    embeddings.position_ids = torch.nn.Buffer(torch.arange(embeddings.num_positions)[None], persistent=False)
    return model.to(device=device, dtype=dtype).eval()


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        # Only the vision tower is read: a full CLIP file is mostly text model.
        names = [key for key in handle.keys() if key.startswith(("vision_model.", "visual"))]  # noqa: SIM118
        tensors = {key: handle.get_tensor(key) for key in names}
    return tensors, metadata


def openclip_to_transformers(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenCLIP `visual.*` names to transformers' (fused q/k/v split, `proj` transposed); other keys kept."""
    out: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if key in _OPENCLIP_TOP_NAMES:
            out[_OPENCLIP_TOP_NAMES[key]] = value
        elif key == "visual.proj":
            out["visual_projection.weight"] = value.t().contiguous()
        elif match := _OPENCLIP_BLOCK.match(key):
            layer, rest = match.groups()
            prefix = f"vision_model.encoder.layers.{layer}."
            if rest.startswith("attn.in_proj_"):
                kind = rest.removeprefix("attn.in_proj_")  # weight | bias
                for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0), strict=True):
                    out[f"{prefix}self_attn.{name}.{kind}"] = part.contiguous()
                continue
            module, kind = rest.rsplit(".", 1)
            out[prefix + f"{_OPENCLIP_BLOCK_NAMES.get(module, module)}.{kind}"] = value
        else:
            out[key] = value
    return out


def infer_config(state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> CLIPVisionConfig:
    """The CLIPVisionConfig these transformers-named tensors describe; ValueError naming a missing key."""
    metadata = metadata or {}
    required = (
        "vision_model.embeddings.patch_embedding.weight",
        "vision_model.embeddings.position_embedding.weight",
        "vision_model.encoder.layers.0.mlp.fc1.weight",
        "visual_projection.weight",
    )
    missing = [key for key in required if key not in state]
    if missing:
        raise ValueError(f"not a CLIP vision model: missing {missing}")
    hidden, _, patch, _ = state[required[0]].shape
    positions = state[required[1]].shape[0]
    side = math.isqrt(positions - 1)
    if side * side != positions - 1:
        raise ValueError(f"position embedding of {positions} rows is not a square grid plus the class token")
    layers = 1 + max(int(key.split(".")[3]) for key in state if key.startswith("vision_model.encoder.layers."))
    heads = int(metadata.get(METADATA_HEADS, 0)) or default_heads(hidden)
    if hidden % heads:
        raise ValueError(f"{heads} heads do not divide the hidden width {hidden}")
    return CLIPVisionConfig(
        hidden_size=hidden,
        intermediate_size=state[required[2]].shape[0],
        num_hidden_layers=layers,
        num_attention_heads=heads,
        patch_size=patch,
        image_size=side * patch,
        projection_dim=state[required[3]].shape[0],
        hidden_act=metadata.get(METADATA_ACT, "gelu"),
        layer_norm_eps=1e-5,
    )


def default_heads(hidden: int) -> int:
    """Heads for a CLIP ViT of this width (not in the shapes): ViT-H 1280 -> 16, ViT-L 1024 -> 16, B 768 -> 12."""
    return max(1, hidden // HEAD_DIM_BY_WIDTH.get(hidden, 64))


def clip_pixels(image_rgb_224: np.ndarray, device: str, dtype: torch.dtype) -> torch.Tensor:
    """[1, 3, H, W] CLIP-normalised pixels of an RGB uint8 image already at the model's size (224)."""
    if image_rgb_224.ndim != 3 or image_rgb_224.shape[2] != 3 or image_rgb_224.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image_rgb_224.shape} {image_rgb_224.dtype}")
    pixels = torch.from_numpy(np.array(image_rgb_224, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return ((pixels - mean) / std)[None].to(device=device, dtype=dtype)


def image_hidden_states(model: CLIPVisionModelWithProjection, pixels: torch.Tensor) -> torch.Tensor:
    """The penultimate layer's hidden states [B, 1 + patches, hidden]: what the "plus" IP-Adapters read."""
    with torch.inference_mode():
        out = model(pixel_values=pixels, output_hidden_states=True)
    return out.hidden_states[-2]


def metadata_for(config: CLIPVisionConfig) -> dict[str, str]:
    """The safetensors metadata that carries what the shapes cannot (heads, activation)."""
    return {METADATA_HEADS: str(config.num_attention_heads), METADATA_ACT: str(config.hidden_act)}
