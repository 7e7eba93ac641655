"""The shipped SDXL config folders: a real CLIP tokenizer, and shapes that make real SDXL's parameter counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from fooocus_es.engine.models.sdxl.build_configs import BASE, SDXL_DIR, clip_vocab

CONFIG_FOLDERS = ("base", "tiny")


def meta_parameter_counts(folder: Path) -> dict[str, int]:
    """Parameter counts of the models the shipped JSON describes, built without any storage."""
    with torch.device("meta"):
        models = {
            "unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet")),
            "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae")),
            "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder")),
            "text_encoder_2": CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder / "text_encoder_2")),
        }
    return {name: sum(p.numel() for p in model.parameters()) for name, model in models.items()}


def test_base_configs_describe_sdxl_base_1_0() -> None:
    counts = meta_parameter_counts(SDXL_DIR / "base")
    assert (
        counts
        == BASE.param_counts
        == {
            "unet": 2_567_463_684,
            "vae": 83_653_863,
            "text_encoder": 123_060_480,
            "text_encoder_2": 694_659_840,
        }
    )
    scheduler = json.loads((SDXL_DIR / "base/scheduler/scheduler_config.json").read_text())
    assert scheduler["_class_name"] == "EulerDiscreteScheduler"
    assert (scheduler["beta_start"], scheduler["beta_end"], scheduler["beta_schedule"]) == (
        0.00085,
        0.012,
        "scaled_linear",
    )
    assert (scheduler["steps_offset"], scheduler["timestep_spacing"], scheduler["prediction_type"]) == (
        1,
        "leading",
        "epsilon",
    )
    vae = json.loads((SDXL_DIR / "base/vae/config.json").read_text())
    assert (vae["scaling_factor"], vae["force_upcast"]) == (0.13025, True)


def test_tiny_configs_are_small_and_keep_the_text_encoders_apart() -> None:
    counts = meta_parameter_counts(SDXL_DIR / "tiny")
    assert sum(counts.values()) < 10_000_000
    te1 = CLIPTextConfig.from_pretrained(SDXL_DIR / "tiny/text_encoder")
    te2 = CLIPTextConfig.from_pretrained(SDXL_DIR / "tiny/text_encoder_2")
    # from_single_file tells the two encoders apart by width: equal widths load CLIP-L twice.
    assert te1.hidden_size != te2.hidden_size
    unet = UNet2DConditionModel.load_config(SDXL_DIR / "tiny/unet")
    assert unet["cross_attention_dim"] == te1.hidden_size + te2.hidden_size


@pytest.mark.parametrize("folder", CONFIG_FOLDERS)
def test_tokenizers_are_openai_clip(folder: str) -> None:
    tokenizer = CLIPTokenizer.from_pretrained(SDXL_DIR / folder / "tokenizer", local_files_only=True)
    tokenizer_2 = CLIPTokenizer.from_pretrained(SDXL_DIR / folder / "tokenizer_2", local_files_only=True)
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer_2("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer.model_max_length == tokenizer_2.model_max_length == 77
    # SDXL pads the CLIP-L prompt with <|endoftext|> and the OpenCLIP one with "!" (id 0).
    assert tokenizer("cat", padding="max_length").input_ids[-1] == 49407
    assert tokenizer_2("cat", padding="max_length").input_ids[-1] == 0
    assert len(tokenizer("word " * 200, truncation=True).input_ids) == 77


def test_shipped_vocabulary_is_derived_from_the_shipped_bpe_file() -> None:
    vocab, merges = clip_vocab()
    for folder in CONFIG_FOLDERS:
        for name in ("tokenizer", "tokenizer_2"):
            assert json.loads((SDXL_DIR / folder / name / "vocab.json").read_text(encoding="utf-8")) == vocab
            shipped_merges = (SDXL_DIR / folder / name / "merges.txt").read_text(encoding="utf-8").splitlines()
            assert shipped_merges[1:] == merges
