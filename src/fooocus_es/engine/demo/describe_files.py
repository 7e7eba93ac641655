"""describe-image's model files for the tiny demo model, under their real names and in their real formats.

- BLIP: a random tiny BlipForConditionalGeneration (text and vision hidden 32, 2 layers each, one
  head: the `.pth` loader reads heads as hidden // 64, at least 1; image 64, patch 16) with a BERT
  vocabulary of common words plus BLIP's [DEC]/[ENC], saved twice with the same weights: as the HF
  folder `blip-image-captioning-base/` (safetensors, tokenizer, preprocessor config) and as
  Fooocus's `.pth` in Salesforce BLIP's names (`{"model": sd}`), so both loaders run offline.
- WD14: an ONNX graph with MOAT's input ([1, 448, 448, 3], BGR 0..255) and output ([1, N] sigmoid
  scores): per-channel means -> a fixed linear map -> sigmoid, so a red image and a blue image get
  different tags; plus a CSV in SmilingWolf's layout (ratings, general tags, characters), with
  underscores and parentheses in the names. Built with `onnx.helper` (optional: without it,
  ToolUnavailable).

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
from fooocus_es.engine.planning.describe_files import BLIP_FILE, BLIP_FOLDER, WD14_CSV, WD14_ONNX
from fooocus_es.engine.tools.errors import ToolUnavailable

if TYPE_CHECKING:
    from transformers import BlipConfig

_SEED: Final = 20240602
ONNX_HINT: Final = "the demo model's WD14 tagger is written with onnx: pip install 'fooocus-es[tools]'"
DEMO_BLIP_IMAGE: Final = 64
BLIP_VOCAB: Final = (
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "a", "an", "the", "of", "and", "with", "on", "in",
    "at", "is", "picture", "photo", "man", "woman", "child", "dog", "cat", "bird", "horse", "car", "house",
    "tree", "street", "beach", "field", "mountain", "city", "room", "table", "chair", "window", "sky",
    "water", "grass", "snow", "red", "blue", "green", "white", "black", "small", "large", "old", "young",
    "sitting", "standing", "walking", "holding", "wearing", "front", "top", "next", "to", "two", "group",
    "[DEC]", "[ENC]",
)  # fmt: skip  # BLIP's tokenizer: the words, then [DEC] (bos) and [ENC] appended, as init_tokenizer does
DEMO_WD14_SIZE: Final = 448  # MOAT's: the tagger reads it off the input shape
# (name, category, weight on the B, G, R channel means in 0..1, bias): the logit of a square image.
DEMO_WD14_TAGS: Final[tuple[tuple[str, int, tuple[float, float, float], float], ...]] = (
    ("general", 9, (0.0, 0.0, 0.0), 2.0),
    ("sensitive", 9, (0.0, 0.0, 0.0), -2.0),
    ("questionable", 9, (0.0, 0.0, 0.0), -3.0),
    ("explicit", 9, (0.0, 0.0, 0.0), -4.0),
    ("1girl", 0, (0.0, 0.0, 0.0), 3.0),  # always (0.95)
    ("solo", 0, (0.0, 0.0, 0.0), -3.0),  # never (0.05)
    ("red_background", 0, (0.0, 0.0, 6.0), -3.0),
    ("blue_background", 0, (6.0, 0.0, 0.0), -3.0),
    ("simple_background", 0, (0.0, 0.0, 0.0), 0.5),  # always (0.62)
    ("star_(symbol)", 0, (0.0, 0.0, 4.0), -3.0),  # red: 0.73
    ("heart_(symbol)", 0, (4.0, 0.0, 0.0), -3.0),  # blue: 0.73
    ("looking_at_viewer", 0, (0.0, 0.0, 0.0), -1.0),  # never (0.27)
    ("hatsune_miku", 4, (6.0, 0.0, 0.0), -3.0),  # blue: 0.95
    ("kagamine_rin", 4, (0.0, 0.0, 4.0), -3.0),  # red: 0.73, under the character threshold
    ("fooocus-chan_(demo)", 4, (0.0, 0.0, 6.0), -3.0),  # red: 0.95
)


def demo_blip_config() -> BlipConfig:
    """The tiny BlipConfig; token ids are BLIP_VOCAB's ([DEC] bos, [SEP] eos, [PAD] pad)."""
    from transformers import BlipConfig

    from fooocus_es.engine.tools.describe.blip import VISION_LAYER_NORM_EPS

    ids = {token: index for index, token in enumerate(BLIP_VOCAB)}
    text = {"vocab_size": len(BLIP_VOCAB), "hidden_size": 32, "encoder_hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 1, "max_position_embeddings": 80,
            "bos_token_id": ids["[DEC]"], "sep_token_id": ids["[SEP]"], "eos_token_id": ids["[SEP]"],
            "pad_token_id": ids["[PAD]"]}  # fmt: skip
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 1,
              "image_size": DEMO_BLIP_IMAGE, "patch_size": 16, "layer_norm_eps": VISION_LAYER_NORM_EPS}  # fmt: skip
    return BlipConfig(text_config=text, vision_config=vision)


def demo_blip_model() -> object:
    """The random tiny BLIP (fixed seed, the caller's RNG restored)."""
    import torch
    from transformers import BlipForConditionalGeneration

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model = BlipForConditionalGeneration(demo_blip_config())
        # BLIP's init leaves the vision tower at ~1e-10: give it weight so the image moves the caption.
        for name, param in model.vision_model.named_parameters():
            if param.dim() > 1 or "embedding" in name:
                torch.nn.init.normal_(param, std=0.1)
    return model.eval()


def write_demo_blip(folder: Path) -> Path:
    """`folder / blip-image-captioning-base/` and `folder / model_base_caption_capfilt_large.pth` unless they exist."""
    import torch
    from transformers import BertTokenizer, BlipImageProcessorPil

    from fooocus_es.engine.tools.describe.blip import BOS_TOKEN, CLIP_MEAN, CLIP_STD, ENC_TOKEN, hf_to_original

    folder = Path(folder)
    target, pth = folder / BLIP_FOLDER, folder / BLIP_FILE
    if target.is_dir() and pth.is_file():
        return folder
    model = demo_blip_model()
    folder.mkdir(parents=True, exist_ok=True)
    if not pth.is_file():
        state = {key: value.detach().clone() for key, value in model.state_dict().items()}  # type: ignore[attr-defined]
        temp = pth.with_name(f".{pth.name}.{os.getpid()}.tmp")
        try:
            torch.save({"model": hf_to_original(state)}, temp)
            os.replace(temp, pth)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
    if target.is_dir():
        return folder
    temp_dir = Path(tempfile.mkdtemp(prefix=f".{BLIP_FOLDER}.", dir=folder))
    try:
        (temp_dir / "vocab.txt").write_text("\n".join(BLIP_VOCAB) + "\n", encoding="utf-8")
        vocab = str(temp_dir / "vocab.txt")
        tokenizer = BertTokenizer(vocab, bos_token=BOS_TOKEN, additional_special_tokens=[ENC_TOKEN])
        model.save_pretrained(temp_dir)  # type: ignore[attr-defined]
        tokenizer.save_pretrained(temp_dir)
        size = {"height": DEMO_BLIP_IMAGE, "width": DEMO_BLIP_IMAGE}
        BlipImageProcessorPil(size=size, image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD)).save_pretrained(temp_dir)
        publish_folder(temp_dir, target)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    return folder


def tagger_graph(size: int, weight: np.ndarray, bias: np.ndarray) -> bytes:
    """An ONNX model: [1, size, size, 3] (0..255) -> channel means / 255 -> x @ weight (3 x N) + bias -> sigmoid."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:
        raise ToolUnavailable(ONNX_HINT) from exc
    tags = weight.shape[1]
    nodes = [
        helper.make_node("ReduceMean", ["input_1:0"], ["means"], axes=[1, 2], keepdims=0),
        helper.make_node("Mul", ["means", "scale"], ["unit"]),
        helper.make_node("MatMul", ["unit", "w"], ["logits_raw"]),
        helper.make_node("Add", ["logits_raw", "b"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["predictions_sigmoid"]),
    ]
    graph = helper.make_graph(
        nodes,
        "demo_wd14",
        [helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT, [1, size, size, 3])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, [1, tags])],
        initializer=[
            numpy_helper.from_array(np.array([1 / 255], dtype=np.float32), "scale"),
            numpy_helper.from_array(weight.astype(np.float32), "w"),
            numpy_helper.from_array(bias.astype(np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="fooocus-es demo")
    model.ir_version = 8  # onnxruntime reads IR 8 everywhere; onnx's newest may be ahead of it
    onnx.checker.check_model(model)
    return model.SerializeToString()


def demo_wd14_graph(size: int = DEMO_WD14_SIZE) -> bytes:
    weight = np.array([channels for _name, _category, channels, _bias in DEMO_WD14_TAGS]).T
    bias = np.array([bias for _name, _category, _channels, bias in DEMO_WD14_TAGS])
    return tagger_graph(size, weight, bias)


def demo_wd14_csv() -> str:
    """SmilingWolf's selected_tags.csv layout: header, then tag_id,name,category,count."""
    rows = ["tag_id,name,category,count"]
    rows += [f"{9999000 + i},{name},{category},{1000 - i}" for i, (name, category, _w, _b) in enumerate(DEMO_WD14_TAGS)]
    return "\n".join(rows) + "\n"


def write_demo_wd14(folder: Path) -> Path:
    """`folder / wd-v1-4-moat-tagger-v2.onnx` and `.csv` unless they exist; returns the folder."""
    folder = Path(folder)
    if not (folder / WD14_ONNX).is_file():
        atomic_bytes(folder / WD14_ONNX, demo_wd14_graph())
    if not (folder / WD14_CSV).is_file():
        atomic_bytes(folder / WD14_CSV, demo_wd14_csv().encode("utf-8"))
    return folder
