"""generate_mask's model files for the tiny demo model, under their real names and in their real formats.

- rembg: one ONNX graph per model with the real input shape ([1, 3, S, S]; S = 320, 768 or 1024) and
  output layout ([1, 1, S, S], or [1, 4, S, S] class logits for u2net_cloth_seg): a fixed 1x1
  convolution, so the saliency is the image's brightness and the cloth class its dominant channel.
  Built with `onnx.helper` (onnx is an optional package: without it, ToolUnavailable).
- SAM: a random tiny SamModel saved as Meta's `.pth` (the inverse of the loader's rename) under all
  three sam_vit_* names; its image size is 128, and the loader sizes SAM's processor from the config.
- GroundingDINO: a random tiny HF folder (Swin embed 16, depths 1, d_model 32, 2 decoder layers:
  1 trips a tie-weights error, 20 queries, max_text_len 32) with a tiny BERT vocabulary.

Fixed seeds and the caller's RNG left alone; every file appears atomically (temp name, then rename).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np

from fooocus_es.engine.demo import atomic_bytes, publish_folder
from fooocus_es.engine.planning.mask_files import GROUNDING_DINO_FOLDER, SAM_FILES, rembg_file
from fooocus_es.engine.tools.errors import ToolUnavailable
from fooocus_es.engine.tools.masks.rembg_onnx import REMBG_SPECS

if TYPE_CHECKING:
    from transformers import SamConfig

_SEED: Final = 20240601
ONNX_HINT: Final = "the demo model's rembg files are written with onnx: pip install 'fooocus-es[tools]'"
_DINO_VOCAB: Final = (
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "a", "an", "the", "of", "and", "with",
    "person", "man", "woman", "face", "eye", "eyes", "hand", "hands", "hair", "shirt", "dress", "cat", "dog",
    "sky", "tree", "car", "house", "background", "object",
)  # fmt: skip
SAM_DEMO_IMAGE: Final = 128
_CLOTH_BACKGROUND: Final = 1.0  # the background logit: a pixel is cloth where a normalised channel beats it


def conv_graph(size: int, weight: np.ndarray, bias: np.ndarray) -> bytes:
    """An ONNX model: [1, 3, size, size] -> 1x1 conv (weight C x 3, bias C) -> [1, C, size, size]."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:
        raise ToolUnavailable(ONNX_HINT) from exc
    channels = weight.shape[0]
    node = helper.make_node("Conv", ["input.1", "w", "b"], ["output"], kernel_shape=[1, 1])
    graph = helper.make_graph(
        [node],
        "demo_rembg",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, channels, size, size])],
        initializer=[
            numpy_helper.from_array(weight.reshape(channels, 3, 1, 1).astype(np.float32), "w"),
            numpy_helper.from_array(bias.astype(np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="fooocus-es demo")
    model.ir_version = 8  # onnxruntime reads IR 8 everywhere; onnx's newest may be ahead of it
    onnx.checker.check_model(model)
    return model.SerializeToString()


def demo_rembg_graph(model: str) -> bytes:
    """The demo graph for rembg model `model`."""
    spec = REMBG_SPECS[model]
    if spec.classes:  # background, upper (R), lower (G), full (B)
        weight = np.vstack([np.zeros((1, 3)), np.eye(3)])
        return conv_graph(spec.size, weight, np.array([_CLOTH_BACKGROUND, 0.0, 0.0, 0.0]))
    return conv_graph(spec.size, np.full((1, 3), 1 / 3), np.zeros(1))


def write_demo_rembg(folder: Path, model: str) -> Path:
    """`folder / MODEL.onnx` unless it exists."""
    path = Path(folder) / rembg_file(model)
    if not path.exists():
        atomic_bytes(path, demo_rembg_graph(model))
    return path


def demo_sam_config() -> SamConfig:
    """The tiny SamConfig: vision hidden 32 (2 layers, window 4), output 16, num_pos_feats 8, image 128."""
    from transformers import SamConfig

    vision = {"hidden_size": 32, "output_channels": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": SAM_DEMO_IMAGE, "global_attn_indexes": [1], "mlp_dim": 64, "num_pos_feats": 8,
              "window_size": 4}  # fmt: skip
    prompt = {"hidden_size": 16, "image_size": SAM_DEMO_IMAGE, "patch_size": 16, "mask_input_channels": 4}
    decoder = {"hidden_size": 16, "mlp_dim": 32, "num_hidden_layers": 2, "iou_head_hidden_dim": 16}
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def write_demo_sam(folder: Path) -> Path:
    """The tiny SAM as Meta `.pth` files under every sam_vit_* name; returns the folder."""
    import torch
    from transformers import SamModel

    from fooocus_es.engine.tools.masks.sam_weights import hf_to_meta

    folder = Path(folder)
    if all((folder / name).exists() for name in SAM_FILES.values()):
        return folder
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model = SamModel(demo_sam_config())
    state = hf_to_meta({key: value.detach().clone() for key, value in model.state_dict().items()})
    folder.mkdir(parents=True, exist_ok=True)
    for name in SAM_FILES.values():
        path = folder / name
        temp = path.with_name(f".{name}.{os.getpid()}.tmp")
        try:
            torch.save(state, temp)
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
    return folder


def write_demo_grounding_dino(folder: Path) -> Path:
    """`folder / grounding-dino-tiny/` (config, safetensors, tokenizer, preprocessor config) unless it exists."""
    import torch
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessorPil,
        SwinConfig,
    )

    target = Path(folder) / GROUNDING_DINO_FOLDER
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{GROUNDING_DINO_FOLDER}.", dir=target.parent))
    try:
        (temp / "vocab.txt").write_text("\n".join(_DINO_VOCAB) + "\n", encoding="utf-8")
        tokenizer = BertTokenizer(str(temp / "vocab.txt"))
        swin = SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=7,
                          out_features=["stage2", "stage3", "stage4"])  # fmt: skip
        bert = BertConfig(vocab_size=len(_DINO_VOCAB), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=64)  # fmt: skip
        config = GroundingDinoConfig(
            backbone_config=swin, text_config=bert, d_model=32, encoder_layers=1, decoder_layers=2,
            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
            num_queries=20, max_text_len=32, encoder_n_points=2, decoder_n_points=2,
        )  # fmt: skip
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_SEED)
            model = GroundingDinoForObjectDetection(config)
        model.save_pretrained(temp)
        tokenizer.save_pretrained(temp)
        GroundingDinoImageProcessorPil().save_pretrained(temp)
        publish_folder(temp, target)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return target
