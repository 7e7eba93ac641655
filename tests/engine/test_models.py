"""ModelStore: model files, the LDM single-file round trip, and the one-pipeline cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fooocus_es.engine.demo.checkpoint import build_demo_models, ensure_demo_checkpoint
from fooocus_es.engine.models.ldm_convert import OPEN_CLIP_PREFIX
from fooocus_es.engine.models.store import ModelMissing, ModelStore, ModelUnsupported, sdxl_config_for
from fooocus_es.engine.planning.demo_names import DEMO_CHECKPOINT


@pytest.fixture(scope="module")
def store(demo_models: Path) -> ModelStore:
    return ModelStore(demo_models)


def test_demo_checkpoint_loads_with_every_tensor_equal_to_its_source(store: ModelStore) -> None:
    pipe = store.load_pipeline(DEMO_CHECKPOINT)
    source = build_demo_models()  # deterministic: the same weights the checkpoint was written from
    for name, model in source.items():
        expected = model.state_dict()
        loaded = getattr(pipe, name).state_dict()
        assert loaded.keys() == expected.keys(), name
        for key, tensor in expected.items():
            # A tensor left on the meta device or random would mean the converter lost it silently.
            assert loaded[key].device.type == "cpu", f"{name}.{key}"
            assert torch.equal(loaded[key], tensor), f"{name}.{key}"


def test_demo_checkpoint_has_the_original_ldm_layout(store: ModelStore) -> None:
    from safetensors import safe_open

    with safe_open(str(store.checkpoint_path(DEMO_CHECKPOINT)), framework="pt") as handle:
        keys = set(handle.keys())
        projection = handle.get_slice(OPEN_CLIP_PREFIX + "text_projection").get_shape()
    assert "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight" in keys
    assert "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight" in keys
    assert "model.diffusion_model.output_blocks.2.2.conv.weight" in keys  # upsampler after an attention
    assert "first_stage_model.decoder.up.0.block.2.conv1.weight" in keys
    assert projection == [48, 32]  # (width, projection): OpenCLIP's x @ P, the transpose of nn.Linear


def test_ensure_demo_checkpoint_is_a_no_op_when_present(demo_models: Path) -> None:
    path = demo_models / "checkpoints" / DEMO_CHECKPOINT
    before = path.stat().st_mtime_ns
    assert ensure_demo_checkpoint(demo_models / "checkpoints") == path
    assert path.stat().st_mtime_ns == before


def test_the_demo_checkpoint_is_generated_on_first_use(tmp_path: Path, store: ModelStore) -> None:
    fresh = ModelStore(tmp_path / "models")
    assert fresh.list_checkpoints() == []
    path = fresh.checkpoint_path(DEMO_CHECKPOINT)
    assert fresh.list_checkpoints() == [DEMO_CHECKPOINT]
    assert path.read_bytes() == store.checkpoint_path(DEMO_CHECKPOINT).read_bytes()  # deterministic


def test_the_pipeline_is_cached_and_freed(store: ModelStore) -> None:
    first = store.load_pipeline(DEMO_CHECKPOINT)
    assert store.load_pipeline(DEMO_CHECKPOINT) is first
    assert store.loaded_name == DEMO_CHECKPOINT
    store.free()
    assert store.loaded_name is None
    assert store.load_pipeline(DEMO_CHECKPOINT) is not first


def test_listing(tmp_path: Path, demo_models: Path) -> None:
    store = ModelStore(tmp_path / "models")
    assert {p.name for p in (tmp_path / "models").iterdir()} == {"checkpoints", "loras", "vae", "safety_checker"}
    (store.folder("checkpoints") / "b.safetensors").write_bytes(b"")
    (store.folder("checkpoints") / "c.safetensors.part").write_bytes(b"")  # an interrupted download
    (store.folder("checkpoints") / ".a.safetensors.tmp").write_bytes(b"")  # an atomic write in progress
    (store.folder("checkpoints") / "diffusers-model").mkdir()
    (store.folder("checkpoints") / "diffusers-model" / "model_index.json").write_text("{}")
    (store.folder("checkpoints") / "empty-folder").mkdir()
    (store.folder("loras") / "style.safetensors").write_bytes(b"")
    assert store.list_checkpoints() == ["b.safetensors", "diffusers-model"]
    assert store.list_loras() == ["style.safetensors"]
    assert store.list_vaes() == []


def test_the_store_switches_the_hub_client_offline(tmp_path: Path) -> None:
    import huggingface_hub

    ModelStore(tmp_path / "models")
    assert huggingface_hub.constants.is_offline_mode()


def test_missing_checkpoint_names_the_file_and_where_to_put_it(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    with pytest.raises(ModelMissing) as caught:
        store.load_pipeline("juggernautXL_v8Rundiffusion.safetensors")
    assert caught.value.name == "juggernautXL_v8Rundiffusion.safetensors"
    assert caught.value.path == tmp_path / "models" / "checkpoints" / "juggernautXL_v8Rundiffusion.safetensors"
    assert str(caught.value.path) in str(caught.value)


@pytest.mark.parametrize("name", ["../secrets.safetensors", "a/b.safetensors", "a\\b.safetensors", "..", "", ".hidden"])
def test_names_that_leave_the_folder_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="invalid model file name"):
        ModelStore(tmp_path / "models").checkpoint_path(name)


def test_checkpoints_that_are_not_sdxl_get_a_clear_error(tmp_path: Path, demo_models: Path) -> None:
    sd15_like = tmp_path / "sd15.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3)}, str(sd15_like))
    with pytest.raises(ModelUnsupported, match="not an SDXL checkpoint"):
        sdxl_config_for("sd15.safetensors", sd15_like)
    lora_like = tmp_path / "lora.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(4, 4)}, str(lora_like))
    with pytest.raises(ModelUnsupported, match="no SDXL UNet"):
        sdxl_config_for("lora.safetensors", lora_like)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelUnsupported, match="garbage.safetensors"):
        sdxl_config_for("garbage.safetensors", garbage)
    demo = demo_models / "checkpoints" / DEMO_CHECKPOINT
    assert sdxl_config_for(DEMO_CHECKPOINT, demo).name == "tiny"


def test_diffusers_folders_load_too(tmp_path: Path, store: ModelStore) -> None:
    pipe = store.load_pipeline(DEMO_CHECKPOINT)
    folder_store = ModelStore(tmp_path / "models")
    pipe.save_pretrained(folder_store.folder("checkpoints") / "demo-diffusers")
    loaded = folder_store.load_pipeline("demo-diffusers")
    assert torch.equal(loaded.unet.conv_in.weight, pipe.unet.conv_in.weight)
