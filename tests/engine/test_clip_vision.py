"""CLIP vision loader: transformers and OpenCLIP layouts, the config read from shapes, Fooocus's 224 input.

Fixtures: the tiny demo CLIP vision tower (fixed seed), saved as safetensors in both layouts and
read by the real loader (image-prompts.md §7, CLIP vision row).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPVisionModelWithProjection

from fooocus_es.engine.demo.ip_adapter_files import build_demo_clip_vision, demo_clip_config, transformers_to_openclip
from fooocus_es.engine.models.clip_vision import (
    CLIP_MEAN,
    CLIP_STD,
    clip_pixels,
    default_heads,
    image_hidden_states,
    infer_config,
    load_clip_vision,
    metadata_for,
    openclip_to_transformers,
)

F32 = torch.float32


@pytest.fixture(scope="module")
def tensors() -> dict[str, torch.Tensor]:
    return build_demo_clip_vision(11)


@pytest.fixture(scope="module")
def reference(tensors) -> CLIPVisionModelWithProjection:
    model = CLIPVisionModelWithProjection(demo_clip_config())
    model.load_state_dict(tensors, strict=False)
    return model.eval()


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    image = np.random.default_rng(3).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    return clip_pixels(image, "cpu", F32)


def save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> Path:
    save_file({key: value.contiguous() for key, value in tensors.items()}, str(path), metadata=metadata)
    return path


def outputs(model: CLIPVisionModelWithProjection, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode():
        out = model(pixel_values=pixels, output_hidden_states=True)
    return out.hidden_states[-2], out.image_embeds


def test_both_layouts_load_to_the_same_outputs(tensors, reference, pixels, tmp_path: Path) -> None:
    metadata = metadata_for(demo_clip_config())
    hf = load_clip_vision(save(tensors, tmp_path / "hf.safetensors", metadata), "cpu", F32)
    openclip = transformers_to_openclip(tensors)
    assert any(key.endswith("attn.in_proj_weight") for key in openclip) and "visual.proj" in openclip
    oc = load_clip_vision(save(openclip, tmp_path / "oc.safetensors", metadata), "cpu", F32)

    expected = outputs(reference, pixels)
    for loaded in (hf, oc):
        assert loaded.config.num_attention_heads == 4 and loaded.config.hidden_act == "gelu"
        hidden, embeds = outputs(loaded, pixels)
        assert torch.equal(hidden, expected[0])  # what the IP-Adapters read: bit for bit
        assert torch.allclose(embeds, expected[1], atol=1e-6, rtol=0)
    assert expected[0].shape == (1, 257, 32)
    assert not any(p.device.type == "meta" for p in oc.parameters())


def test_openclip_rename_is_the_inverse_of_the_demo_writer(tensors) -> None:
    back = openclip_to_transformers(transformers_to_openclip(tensors))
    assert back.keys() == tensors.keys()
    assert all(torch.equal(back[key], tensors[key]) for key in tensors)


def test_config_is_inferred_from_the_shapes(tensors) -> None:
    config = infer_config(tensors)
    want = demo_clip_config()
    for field in (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "patch_size",
        "image_size",
        "projection_dim",
    ):
        assert getattr(config, field) == getattr(want, field), field
    assert config.num_attention_heads == default_heads(32) == 1  # without metadata: the width rule
    assert [default_heads(width) for width in (1280, 1024, 768, 1664)] == [16, 16, 12, 16]


def test_text_tower_and_position_ids_are_ignored(tensors, reference, pixels, tmp_path: Path) -> None:
    extra = dict(tensors)
    extra["text_model.embeddings.token_embedding.weight"] = torch.randn(10, 8)
    extra["vision_model.embeddings.position_ids"] = torch.arange(257)[None]
    extra["logit_scale"] = torch.ones(())
    loaded = load_clip_vision(save(extra, tmp_path / "full.safetensors", metadata_for(demo_clip_config())), "cpu", F32)
    assert torch.equal(outputs(loaded, pixels)[0], outputs(reference, pixels)[0])


def test_non_clip_files_are_rejected_naming_missing_keys(tensors, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="patch_embedding"):
        load_clip_vision(save({"foo.weight": torch.ones(3)}, tmp_path / "other.safetensors"), "cpu", F32)
    partial = {key: value for key, value in tensors.items() if ".layers.1.mlp.fc2." not in key}
    with pytest.raises(ValueError, match=r"layers\.1\.mlp\.fc2"):
        load_clip_vision(save(partial, tmp_path / "partial.safetensors"), "cpu", F32)


def test_clip_pixels_normalise_without_resizing() -> None:
    white = np.full((224, 224, 3), 255, dtype=np.uint8)
    pixels = clip_pixels(white, "cpu", torch.float16)
    assert pixels.shape == (1, 3, 224, 224) and pixels.dtype == torch.float16
    want = [(1 - m) / s for m, s in zip(CLIP_MEAN, CLIP_STD, strict=True)]
    assert torch.allclose(pixels[0, :, 5, 7].float(), torch.tensor(want), atol=1e-2)
    ramp = np.zeros((224, 224, 3), dtype=np.uint8)
    ramp[:, :, 0] = np.arange(224, dtype=np.uint8)[None, :]
    assert torch.allclose(
        clip_pixels(ramp, "cpu", F32)[0, 0, 0, 100], torch.tensor((100 / 255 - CLIP_MEAN[0]) / CLIP_STD[0])
    )
    with pytest.raises(ValueError):
        clip_pixels(white[:, :, :2], "cpu", F32)


def test_image_hidden_states_is_the_penultimate_layer(reference, pixels) -> None:
    hidden = image_hidden_states(reference, pixels)
    with torch.no_grad():
        every = reference(pixel_values=pixels, output_hidden_states=True).hidden_states
    assert len(every) == 4 and torch.equal(hidden, every[-2]) and not torch.equal(hidden, every[-1])
