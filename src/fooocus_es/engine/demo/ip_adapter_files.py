"""CLIP vision, IP-Adapter plus (ImagePrompt, FaceSwap) and negative-token files for the tiny demo model.

Written under the real file names, in the real formats, so the server runs image prompts offline
through the real loaders: a tiny CLIP vision tower in OpenCLIP's layout (safetensors, its head
count in the metadata: heads are not in the shapes), fp16 torch pickles of `{"image_proj",
"ip_adapter"}` for the demo UNet's 17 attn2 layers (Resampler depth 4, as the real ones), and the
negative tokens (key `data`). Random and fixed-seed, like the demo model: they change images, they
teach nothing.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import torch
    from transformers import CLIPVisionConfig

DEMO_CLIP_FILE: Final = "clip_vision_vit_h.safetensors"
DEMO_IP_FILES: Final = ("ip-adapter-plus_sdxl_vit-h.bin", "ip-adapter-plus-face_sdxl_vit-h.bin")
DEMO_NEGATIVE_FILE: Final = "fooocus_ip_negative.safetensors"
DEMO_CLIP_HIDDEN: Final = 32
DEMO_CLIP_HEADS: Final = 4
DEMO_CLIP_LAYERS: Final = 3
DEMO_RESAMPLER_DIM: Final = 128  # 2 heads of 64
DEMO_QUERIES: Final = 16
_KV_GAIN: Final = 3.0  # to_k_ip / to_v_ip std = gain / sqrt(cross): image values about as large as text values


def build_demo_clip_vision(seed: int) -> dict[str, torch.Tensor]:
    """The tiny CLIP vision tower's tensors in transformers' names (image 224, patch 14)."""
    import torch
    from transformers import CLIPVisionModelWithProjection

    config = demo_clip_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPVisionModelWithProjection(config)
    return {key: value.detach().clone() for key, value in model.state_dict().items() if "position_ids" not in key}


def demo_clip_config() -> CLIPVisionConfig:
    """The tiny tower: hidden 32, 3 layers, 4 heads, image 224, patch 14 (257 tokens, like ViT-H's)."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=DEMO_CLIP_HIDDEN,
        intermediate_size=4 * DEMO_CLIP_HIDDEN,
        num_hidden_layers=DEMO_CLIP_LAYERS,
        num_attention_heads=DEMO_CLIP_HEADS,
        patch_size=14,
        image_size=224,
        projection_dim=16,
        hidden_act="gelu",
    )


def transformers_to_openclip(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of the loader's OpenCLIP rename: fused in_proj, `visual.proj` = projection transposed."""
    import torch

    top = {
        "vision_model.embeddings.class_embedding": "visual.class_embedding",
        "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
        "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
        "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
        "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
        "vision_model.post_layernorm.weight": "visual.ln_post.weight",
        "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    }
    block = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}  # fmt: skip
    out: dict[str, torch.Tensor] = {"visual.proj": tensors["visual_projection.weight"].t().contiguous()}
    layers = {int(key.split(".")[3]) for key in tensors if key.startswith("vision_model.encoder.layers.")}
    for key, name in top.items():
        out[name] = tensors[key]
    for layer in sorted(layers):
        src = f"vision_model.encoder.layers.{layer}."
        dst = f"visual.transformer.resblocks.{layer}."
        for kind in ("weight", "bias"):
            qkv = [tensors[f"{src}self_attn.{p}_proj.{kind}"] for p in ("q", "k", "v")]
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(qkv, dim=0)
            for hf, oc in block.items():
                out[f"{dst}{oc}.{kind}"] = tensors[f"{src}{hf}.{kind}"]
    return out


def build_demo_ip_adapter(unet: torch.nn.Module, clip_hidden: int, seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """`{"image_proj", "ip_adapter"}` (float32) of a random IP-Adapter plus for `unet`'s attn2 layers."""
    import torch

    from fooocus_es.engine.diffusion.ip_adapter import Resampler, ResamplerDims, cross_attention_layers

    cross = unet.config.cross_attention_dim
    dims = ResamplerDims(
        embed=clip_hidden,
        dim=DEMO_RESAMPLER_DIM,
        output=cross,
        depth=4,
        heads=DEMO_RESAMPLER_DIM // 64,
        queries=DEMO_QUERIES,
        ff_inner=4 * DEMO_RESAMPLER_DIM,
    )
    ip_adapter: dict[str, torch.Tensor] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        image_proj = {key: value.detach().clone() for key, value in Resampler(dims).state_dict().items()}
        for index, (_, attn) in enumerate(cross_attention_layers(unet)):
            for kind in ("to_k_ip", "to_v_ip"):
                weight = torch.randn(attn.inner_kv_dim, cross) * (_KV_GAIN / cross**0.5)
                ip_adapter[f"{2 * index + 1}.{kind}.weight"] = weight
    return {"image_proj": image_proj, "ip_adapter": ip_adapter}


def write_demo_ip_files(controlnet_dir: Path, clip_dir: Path) -> None:
    """Write the demo CLIP vision, both IP-Adapters and the negative tokens; existing files are left alone.

    Built for the demo checkpoint's UNet; tensors depend only on the file names (the caller's RNG
    state is untouched). Each file is written to a temp name and renamed into place.
    """
    import torch

    from fooocus_es.engine.models.clip_vision import metadata_for

    controlnet_dir, clip_dir = Path(controlnet_dir), Path(clip_dir)
    clip_path = clip_dir / DEMO_CLIP_FILE
    if not clip_path.exists():
        tensors = transformers_to_openclip(build_demo_clip_vision(_seed(DEMO_CLIP_FILE)))
        _atomic(clip_path, lambda temp: _save_safetensors(tensors, temp, metadata_for(demo_clip_config())))
    todo = [controlnet_dir / name for name in DEMO_IP_FILES if not (controlnet_dir / name).exists()]
    negative_path = controlnet_dir / DEMO_NEGATIVE_FILE
    if todo or not negative_path.exists():
        from fooocus_es.engine.demo.checkpoint import build_demo_models

        unet = build_demo_models()["unet"]
        for path in todo:
            data = build_demo_ip_adapter(unet, DEMO_CLIP_HIDDEN, _seed(path.name))
            half = {part: {key: value.half() for key, value in tensors.items()} for part, tensors in data.items()}
            _atomic(path, lambda temp, half=half: torch.save(half, temp))
        if not negative_path.exists():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_seed(DEMO_NEGATIVE_FILE))
                negative = torch.randn(DEMO_QUERIES, unet.config.cross_attention_dim).half()
            _atomic(negative_path, lambda temp: _save_safetensors({"data": negative}, temp, None))


def _seed(name: str) -> int:
    return zlib.crc32(name.encode())


def _save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None) -> None:
    from safetensors.torch import save_file

    save_file({key: value.contiguous() for key, value in tensors.items()}, str(path), metadata=metadata)


def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    """write(temp) then rename: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temp)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
