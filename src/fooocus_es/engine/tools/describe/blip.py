"""describe-image's Photo captioner: BLIP (ViT-B/16 at 384 + a BERT decoder) on transformers.

What Fooocus's extras/interrogate.py and BLIP's `blip_decoder.generate(sample=True)` do: bicubic resize
to the model's square, CLIP mean/std, the prompt "a picture of " with [DEC] in place of [CLS] and the
trailing [SEP] dropped, nucleus sampling (top_p 0.9, HF's default top_k 50, repetition penalty 1.1,
10 to 75 tokens), decoded without special tokens and with the prompt cut from the front.

Fooocus samples unseeded; here one (image, seed) always gives one caption: the global RNG is forked
(torch.random.fork_rng), seeded, and restored, so other callers' streams are left as they were.

Two weight formats load: the HF folder (from_pretrained) and Fooocus's `.pth` in Salesforce BLIP's
names. transformers' convert_blip_original_pytorch_to_hf.py (not shipped in the wheel) only renames
the vision tower (no qkv split: BlipAttention keeps one qkv Linear); the text decoder's names are
already transformers' (`text_decoder.bert.*`, `text_decoder.cls.*`). The rules are written both ways
so the demo can store a tiny BLIP under the original names.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from transformers import BlipConfig

CLIP_MEAN: Final = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: Final = (0.26862954, 0.26130258, 0.27577711)
PROMPT: Final = "a picture of "
# BLIP's `generate(sample=True)`: its own repetition_penalty argument is ignored, 1.1 is hard-coded.
GENERATION: Final[dict[str, Any]] = {
    "do_sample": True,
    "top_p": 0.9,
    "top_k": 50,  # transformers' default, which BLIP's generate also ran with
    "num_beams": 1,
    "max_length": 75,
    "min_length": 10,
    "repetition_penalty": 1.1,
}
BOS_TOKEN: Final = "[DEC]"  # BLIP's init_tokenizer: bert-base-uncased + [DEC] (bos) + [ENC]
ENC_TOKEN: Final = "[ENC]"
HEAD_DIM: Final = 64  # the shapes do not hold the head count; every BLIP (ViT-B/L, BERT base) uses 64 per head
VISION_LAYER_NORM_EPS: Final = 1e-6  # BLIP's ViT (timm-style LayerNorm eps), not BlipVisionConfig's 1e-5

# (original prefix, transformers prefix): the whole-key prefixes of the vision tower.
_TOP: Final = (
    ("visual_encoder.cls_token", "vision_model.embeddings.class_embedding"),
    ("visual_encoder.pos_embed", "vision_model.embeddings.position_embedding"),
    ("visual_encoder.patch_embed.proj.", "vision_model.embeddings.patch_embedding."),
    ("visual_encoder.norm.", "vision_model.post_layernorm."),
    ("visual_encoder.blocks.", "vision_model.encoder.layers."),
)
# (original, transformers) for the part of a block key after its index.
_BLOCK: Final = (
    ("attn.qkv.", "self_attn.qkv."),
    ("attn.proj.", "self_attn.projection."),
    ("norm1.", "layer_norm1."),
    ("norm2.", "layer_norm2."),
)
_BLOCKS_HF: Final = "vision_model.encoder.layers."
_BLOCKS_ORIGINAL: Final = "visual_encoder.blocks."


def _rename(key: str, to_hf: bool) -> str:
    """One key through the tables, in either direction; keys no rule names (the text decoder) pass as they are."""
    for original, hf in _TOP:
        old, new = (original, hf) if to_hf else (hf, original)
        if key.startswith(old):
            key = new + key[len(old) :]
            break
    blocks = _BLOCKS_HF if to_hf else _BLOCKS_ORIGINAL
    if key.startswith(blocks):
        index, _, rest = key[len(blocks) :].partition(".")
        for original, hf in _BLOCK:
            old, new = (original, hf) if to_hf else (hf, original)
            if rest.startswith(old):
                rest = new + rest[len(old) :]
                break
        key = f"{blocks}{index}.{rest}"
    return key


def original_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Salesforce BLIP's key names -> BlipForConditionalGeneration's."""
    return {_rename(key, True): value for key, value in state.items()}


def hf_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BlipForConditionalGeneration's key names -> Salesforce BLIP's (the inverse of original_to_hf)."""
    return {_rename(key, False): value for key, value in state.items()}


def _count(state: dict[str, torch.Tensor], prefix: str) -> int:
    return len({key[len(prefix) :].split(".")[0] for key in state if key.startswith(prefix)})


def blip_config_from_state(state: dict[str, torch.Tensor], *, bos: int, sep: int, pad: int) -> BlipConfig:
    """BlipConfig read off an HF-named state dict (the `.pth` has no config); the token ids are the tokenizer's."""
    from transformers import BlipConfig

    patch = state["vision_model.embeddings.patch_embedding.weight"]
    hidden, patch_size = patch.shape[0], patch.shape[2]
    grid = round((state["vision_model.embeddings.position_embedding"].shape[1] - 1) ** 0.5)
    text_hidden = state["text_decoder.bert.embeddings.word_embeddings.weight"].shape[1]
    vision = {
        "hidden_size": hidden,
        "patch_size": patch_size,
        "image_size": grid * patch_size,
        "num_hidden_layers": _count(state, _BLOCKS_HF),
        "num_attention_heads": max(1, hidden // HEAD_DIM),
        "intermediate_size": state[f"{_BLOCKS_HF}0.mlp.fc1.weight"].shape[0],
        "layer_norm_eps": VISION_LAYER_NORM_EPS,
    }
    layer = "text_decoder.bert.encoder.layer."
    text = {
        "vocab_size": state["text_decoder.bert.embeddings.word_embeddings.weight"].shape[0],
        "hidden_size": text_hidden,
        "encoder_hidden_size": state[f"{layer}0.crossattention.self.key.weight"].shape[1],
        "intermediate_size": state[f"{layer}0.intermediate.dense.weight"].shape[0],
        "num_hidden_layers": _count(state, layer),
        "num_attention_heads": max(1, text_hidden // HEAD_DIM),
        "max_position_embeddings": state["text_decoder.bert.embeddings.position_embeddings.weight"].shape[0],
        "bos_token_id": bos,
        "sep_token_id": sep,
        "eos_token_id": sep,
        "pad_token_id": pad,
    }
    return BlipConfig(text_config=text, vision_config=vision)


def load_tokenizer(folder: Path) -> Any:
    """The folder's BertTokenizer with BLIP's [DEC] and [ENC] (added when a plain bert-base-uncased lacks them)."""
    from transformers import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(str(folder))
    if BOS_TOKEN not in tokenizer.get_vocab():  # BLIP's init_tokenizer adds them after the 30522 words
        tokenizer.add_special_tokens({"bos_token": BOS_TOKEN, "additional_special_tokens": [ENC_TOKEN]})
    elif tokenizer.bos_token != BOS_TOKEN:
        tokenizer.add_special_tokens({"bos_token": BOS_TOKEN})  # special, so decoding skips it
    return tokenizer


def load_blip_pth(path: Path, tokenizer: Any, device: str, dtype: torch.dtype) -> Any:
    """BlipForConditionalGeneration from a Salesforce BLIP `.pth` (`{"model": sd}` or a bare state dict).

    As BLIP's own load_checkpoint: keys the model lacks (another BLIP head's) are ignored; a missing
    one is an error, except the tied LM-head weights, which take their source's tensor.
    """
    import torch
    from transformers import BlipForConditionalGeneration

    raw = torch.load(path, map_location="cpu", weights_only=True)
    state = original_to_hf(raw.get("model", raw) if isinstance(raw, dict) else raw)
    if "vision_model.embeddings.patch_embedding.weight" not in state:
        raise ValueError(f"{path.name} is not a BLIP captioning checkpoint")
    config = blip_config_from_state(
        state,
        bos=tokenizer.convert_tokens_to_ids(BOS_TOKEN),
        sep=tokenizer.sep_token_id,
        pad=tokenizer.pad_token_id,
    )
    with torch.device("meta"):
        model = BlipForConditionalGeneration(config)
    wanted = model.state_dict()
    for target, source in (getattr(model, "_tied_weights_keys", None) or {}).items():
        if target not in state and source in state:
            state[target] = state[source]
    missing = sorted(set(wanted) - set(state))
    if missing:
        raise ValueError(f"{path.name} lacks {len(missing)} BLIP tensors, e.g. {missing[0]}")
    model.load_state_dict({key: state[key] for key in wanted}, strict=True, assign=True)
    for module in model.modules():  # non-persistent buffers are in no state dict: still on meta
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer.is_meta and name == "position_ids":
                module.position_ids = torch.arange(buffer.shape[-1]).expand(buffer.shape)
            elif buffer.is_meta:
                raise ValueError(f"no value for the buffer {name} of {type(module).__name__}")
    return model.to(device=device, dtype=dtype).eval()


def load_blip_folder(folder: Path, device: str, dtype: torch.dtype) -> Any:
    """BlipForConditionalGeneration from an HF-format folder (Salesforce/blip-image-captioning-base)."""
    from transformers import BlipForConditionalGeneration

    return BlipForConditionalGeneration.from_pretrained(str(folder), dtype=dtype).to(device).eval()


@dataclass
class BlipCaptioner:
    """A loaded BLIP and its tokenizer; `caption` is one seeded describe-image (Photo)."""

    model: Any
    tokenizer: Any
    device: str

    @cached_property
    def processor(self) -> Any:
        """BlipProcessor at the model's own image size (384 for BLIP base): the Pil backend, deterministic."""
        from transformers import BlipImageProcessorPil, BlipProcessor

        size = int(self.model.config.vision_config.image_size)
        images = BlipImageProcessorPil(
            size={"height": size, "width": size}, image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD)
        )
        return BlipProcessor(image_processor=images, tokenizer=self.tokenizer)

    def inputs(self, image: Image.Image) -> dict[str, torch.Tensor]:
        """pixel_values (model dtype), input_ids and attention_mask of the prompt, on the model's device."""
        encoded = self.processor(images=image.convert("RGB"), text=PROMPT, return_tensors="pt")
        dtype = next(self.model.parameters()).dtype
        return {
            "pixel_values": encoded["pixel_values"].to(self.device, dtype),
            "input_ids": encoded["input_ids"].to(self.device),
            "attention_mask": encoded["attention_mask"].to(self.device),
        }

    def caption(self, image: Image.Image, *, seed: int) -> str:
        import torch

        inputs = self.inputs(image)
        with seeded(self.device, seed), torch.inference_mode():
            output = self.model.generate(**inputs, **GENERATION)
        text = self.tokenizer.decode(output[0], skip_special_tokens=True)
        return text.removeprefix(PROMPT.strip()).strip()


@contextmanager
def seeded(device: str, seed: int) -> Iterator[None]:
    """Fork the CPU RNG (and this CUDA device's), seed them, restore them on exit."""
    import torch

    where = torch.device(device)
    devices: list[int] = []
    if where.type == "cuda":
        devices = [where.index if where.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(seed)
        for index in devices:  # only this device's: torch.manual_seed would reseed every GPU's, unrestored
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield
