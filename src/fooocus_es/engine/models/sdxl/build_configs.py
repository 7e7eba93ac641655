"""Regenerate the shipped, weight-free SDXL config folders (`base/`, `tiny/`) beside this file.

    python -m fooocus_es.engine.models.sdxl.build_configs

`from_single_file(path, config=<folder>, local_files_only=True)` needs a diffusers-layout folder
with every component's config and the tokenizers, and the hub cannot be reached at run time, so
we ship them. Each folder is what `StableDiffusionXLPipeline.save_pretrained` writes, minus the
weights. The configs are written by the diffusers/transformers classes themselves (models built on
the meta device, so SDXL's 3.5 B parameters cost no memory), and the parameter counts are checked
against the published SDXL base 1.0 numbers, so a typo in a shape cannot slip through.

Deliberate differences from the hub's `stabilityai/stable-diffusion-xl-base-1.0` folder:
  * the CLIP configs use the corrected special-token ids (bos 49406, eos 49407) instead of the
    hub's legacy 0/2; the pooled output is the same for every prompt without added tokens;
  * each tokenizer folder holds vocab.json + merges.txt + tokenizer_config.json (the hub layout),
    not tokenizer.json: 1.5 MB instead of 3.6 MB and twice as fast to load.
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

SDXL_DIR: Final = Path(__file__).resolve().parent
BPE_VOCAB: Final = SDXL_DIR / "bpe_simple_vocab_16e6.txt.gz"

# OpenAI CLIP's vocabulary: 256 byte tokens, their 256 end-of-word forms, 48,894 merges, 2 specials.
_CLIP_VOCAB_SIZE: Final = 49408
_CLIP_MERGES: Final = _CLIP_VOCAB_SIZE - 256 * 2 - 2

_CLIP_COMMON: Final[dict[str, Any]] = {
    "vocab_size": _CLIP_VOCAB_SIZE,
    "max_position_embeddings": 77,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 1,
    "layer_norm_eps": 1e-5,
}

# SDXL base 1.0's scheduler: EulerDiscrete over the SD noise schedule, "leading" spacing.
SCHEDULER_CONFIG: Final[dict[str, Any]] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "interpolation_type": "linear",
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "use_karras_sigmas": False,
}


@dataclass(frozen=True)
class Topology:
    """Constructor arguments of the four SDXL models; `param_counts` are asserted when set."""

    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoder: dict[str, Any]
    text_encoder_2: dict[str, Any]
    param_counts: dict[str, int] = field(default_factory=dict)


_UNET_COMMON: Final[dict[str, Any]] = {
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
}
_VAE_COMMON: Final[dict[str, Any]] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "scaling_factor": 0.13025,
    "force_upcast": True,  # SDXL's VAE overflows in float16
}

BASE: Final = Topology(
    unet={
        **_UNET_COMMON,
        "sample_size": 128,
        "block_out_channels": [320, 640, 1280],
        "transformer_layers_per_block": [1, 2, 10],
        "attention_head_dim": [5, 10, 20],  # diffusers' legacy name: these are head counts
        "cross_attention_dim": 2048,  # 768 (CLIP-L) + 1280 (bigG) token features, concatenated
        "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 2816,  # 1280 pooled + 6 size/crop ids * 256
    },
    vae={**_VAE_COMMON, "block_out_channels": [128, 256, 512, 512], "sample_size": 1024},
    text_encoder={
        **_CLIP_COMMON,
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "hidden_act": "quick_gelu",
        "projection_dim": 768,
    },
    text_encoder_2={
        **_CLIP_COMMON,
        "hidden_size": 1280,
        "intermediate_size": 5120,
        "num_hidden_layers": 32,
        "num_attention_heads": 20,
        "hidden_act": "gelu",
        "projection_dim": 1280,
    },
    # The published sizes of SDXL base 1.0's four models.
    param_counts={"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840},
)

# Same block structure as BASE (so the LDM key converters apply unchanged), a few M parameters.
# The two text encoders' widths must differ: from_single_file tells them apart by that width.
TINY: Final = Topology(
    unet={
        **_UNET_COMMON,
        "sample_size": 32,
        "block_out_channels": [32, 64, 64],
        "transformer_layers_per_block": [1, 1, 2],
        "attention_head_dim": [2, 4, 4],
        "cross_attention_dim": 80,  # 32 + 48
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 80,  # 32 pooled + 6 * 8
    },
    vae={**_VAE_COMMON, "block_out_channels": [8, 16, 16, 16], "norm_num_groups": 8, "sample_size": 256},
    text_encoder={
        **_CLIP_COMMON,
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "hidden_act": "quick_gelu",
        "projection_dim": 32,
    },
    text_encoder_2={
        **_CLIP_COMMON,
        "hidden_size": 48,
        "intermediate_size": 37,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "hidden_act": "gelu",
        "projection_dim": 32,
    },
)

TOPOLOGIES: Final[dict[str, Topology]] = {"base": BASE, "tiny": TINY}


# -- tokenizer -------------------------------------------------------------------------------------
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table, in CLIP's order (vocab ids depend on it)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(others)}}


def clip_vocab(bpe_gz: Path = BPE_VOCAB) -> tuple[dict[str, int], list[str]]:
    """OpenAI CLIP's vocab and merges, built from the BPE file exactly as `clip/simple_tokenizer.py` does."""
    lines = gzip.decompress(bpe_gz.read_bytes()).decode("utf-8").split("\n")
    merges = lines[1 : _CLIP_MERGES + 1]  # line 0 is a version header
    byte_tokens = list(_bytes_to_unicode().values())
    tokens = [*byte_tokens, *(t + "</w>" for t in byte_tokens), *("".join(m.split()) for m in merges)]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == _CLIP_VOCAB_SIZE, len(tokens)
    return {token: index for index, token in enumerate(tokens)}, merges


def write_tokenizer(folder: Path, vocab: dict[str, int], merges: Sequence[str], pad_token: str) -> None:
    """vocab.json + merges.txt, and the tokenizer_config.json that transformers itself writes for them."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    # model_max_length must be explicit: transformers' default is 1e30, and SDXL truncates at 77.
    tokenizer = CLIPTokenizer.from_pretrained(folder, model_max_length=77, pad_token=pad_token, local_files_only=True)
    with tempfile.TemporaryDirectory() as saved:
        tokenizer.save_pretrained(saved)
        config = json.loads((Path(saved) / "tokenizer_config.json").read_text(encoding="utf-8"))
    for loader_only_key in ("is_local", "local_files_only"):  # how it was loaded, not what it is
        config.pop(loader_only_key, None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# -- models on the meta device ---------------------------------------------------------------------
def build_on_meta(topology: Topology) -> dict[str, Any]:
    """The four models with shapes but no storage: configs and parameter counts for free.

    `torch.device("meta")` rather than accelerate's `init_empty_weights`, which still allocates
    and initialises every parameter on the CPU before moving it (8 s instead of 0.6 s for SDXL).
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with torch.device("meta"):
        return {
            "unet": UNet2DConditionModel(**topology.unet),
            "vae": AutoencoderKL(**topology.vae),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**topology.text_encoder)),
            "text_encoder_2": CLIPTextModelWithProjection(CLIPTextConfig(**topology.text_encoder_2)),
        }


def parameter_counts(models: dict[str, Any]) -> dict[str, int]:
    return {name: sum(p.numel() for p in model.parameters()) for name, model in models.items()}


def write_config_folder(
    folder: Path, topology: Topology, vocab: dict[str, int], merges: Sequence[str]
) -> dict[str, int]:
    """Write one complete config folder; returns the models' parameter counts."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

    models = build_on_meta(topology)
    counts = parameter_counts(models)
    for name, expected in topology.param_counts.items():
        if counts[name] != expected:
            raise ValueError(f"{folder.name}/{name}: {counts[name]:,} parameters, expected {expected:,}")

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    models["unet"].save_config(folder / "unet")
    models["vae"].save_config(folder / "vae")
    for name, architecture in (("text_encoder", "CLIPTextModel"), ("text_encoder_2", "CLIPTextModelWithProjection")):
        config = models[name].config
        config.architectures = [architecture]
        config.save_pretrained(folder / name)
    scheduler = EulerDiscreteScheduler(**SCHEDULER_CONFIG)
    scheduler.save_config(folder / "scheduler")
    write_tokenizer(folder / "tokenizer", vocab, merges, pad_token="<|endoftext|>")
    write_tokenizer(folder / "tokenizer_2", vocab, merges, pad_token="!")  # as SDXL's OpenCLIP tokenizer pads

    # model_index.json exactly as save_pretrained writes it: the pipeline's own registry of components.
    pipe = StableDiffusionXLPipeline(
        **models,
        tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True),
        tokenizer_2=CLIPTokenizer.from_pretrained(folder / "tokenizer_2", local_files_only=True),
        scheduler=scheduler,
        add_watermarker=False,
    )
    pipe.save_config(folder)
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    names = list(argv if argv is not None else sys.argv[1:]) or list(TOPOLOGIES)
    vocab, merges = clip_vocab()
    for name in names:
        counts = write_config_folder(SDXL_DIR / name, TOPOLOGIES[name], vocab, merges)
        print(name, ", ".join(f"{part} {count:,}" for part, count in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
