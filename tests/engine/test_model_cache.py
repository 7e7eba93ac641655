"""ModelStore's loaded-model cache: LRU eviction within a byte budget, keep=, VAE files, free() and reports."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from fooocus_es.engine.demo.checkpoint import build_demo_models
from fooocus_es.engine.models.ldm_convert import VAE_PREFIX, save_checkpoint, vae_to_ldm
from fooocus_es.engine.models.store import ModelMissing, ModelStore, ModelUnsupported, model_bytes
from fooocus_es.engine.planning.demo_names import DEMO_CHECKPOINT


@pytest.fixture(scope="module")
def demo_source() -> dict[str, torch.nn.Module]:
    return build_demo_models()


@pytest.fixture(scope="module")
def pipeline_bytes(demo_source: dict[str, torch.nn.Module]) -> int:
    """What one demo pipeline takes: the four models it is made of."""
    return sum(model_bytes(model) for model in demo_source.values())


@pytest.fixture
def models(tmp_path: Path, demo_models: Path) -> Path:
    """A models/ folder with three copies of the demo checkpoint: a, b and c."""
    folder = tmp_path / "models"
    (folder / "checkpoints").mkdir(parents=True)
    for name in ("a", "b", "c"):
        shutil.copyfile(demo_models / "checkpoints" / DEMO_CHECKPOINT, folder / "checkpoints" / f"{name}.safetensors")
    return folder


def cached(store: ModelStore) -> list[str]:
    """Cached names, least recently used first."""
    return [item["name"] for item in store.memory_report()["models"]]


def write_vae(path: Path, vae: torch.nn.Module, prefix: str = "") -> Path:
    return save_checkpoint({prefix + key: t for key, t in vae_to_ldm(vae.state_dict(), vae.config).items()}, path)


def test_least_recently_used_pipeline_goes_first(models: Path, pipeline_bytes: int) -> None:
    store = ModelStore(models, cache_bytes=pipeline_bytes * 5 // 2)  # room for two
    a = store.load_pipeline("a.safetensors")
    store.load_pipeline("b.safetensors")
    assert store.load_pipeline("a.safetensors") is a  # a cache hit, and a is now the most recent
    store.load_pipeline("c.safetensors")
    assert cached(store) == ["a.safetensors", "c.safetensors"]
    assert store.loaded_name == "c.safetensors"
    report = store.memory_report()
    assert [item["bytes"] for item in report["models"]] == [pipeline_bytes, pipeline_bytes]
    assert report["cached_bytes"] == 2 * pipeline_bytes and report["budget_bytes"] == pipeline_bytes * 5 // 2


def test_without_a_budget_one_pipeline_stays_unless_kept(models: Path) -> None:
    store = ModelStore(models)  # cache_bytes None: today's one-pipeline behaviour
    store.load_pipeline("a.safetensors")
    store.load_pipeline("b.safetensors")
    assert cached(store) == ["b.safetensors"]
    store.load_pipeline("a.safetensors", keep=("b.safetensors",))  # a base model and its refiner
    assert cached(store) == ["b.safetensors", "a.safetensors"]
    assert ModelStore(models, cache_bytes=0).cache_bytes is None  # 0 means the same


def test_a_model_larger_than_the_budget_still_loads(models: Path) -> None:
    store = ModelStore(models, cache_bytes=1)
    pipe = store.load_pipeline("a.safetensors")
    assert cached(store) == ["a.safetensors"]
    assert store.load_pipeline("a.safetensors") is pipe


def test_vae_files_load_with_bare_or_prefixed_ldm_keys(models: Path, demo_source: dict[str, torch.nn.Module]) -> None:
    source = demo_source["vae"]
    write_vae(models / "vae" / "bare.safetensors", source)
    write_vae(models / "vae" / "prefixed.safetensors", source, prefix=VAE_PREFIX)
    store = ModelStore(models, cache_bytes=10**9)
    assert store.list_vaes() == ["bare.safetensors", "prefixed.safetensors"]
    expected = source.state_dict()
    for name in store.list_vaes():
        vae = store.load_vae(name)
        loaded = vae.state_dict()
        assert loaded.keys() == expected.keys()
        assert all(torch.equal(loaded[key], tensor) for key, tensor in expected.items()), name
        assert vae.dtype == torch.float32 and vae.config.force_upcast
        assert store.load_vae(name) is vae
    assert store.memory_report()["models"] == [
        {"kind": "vae", "name": name, "bytes": model_bytes(source)} for name in store.list_vaes()
    ]


def test_vae_and_pipeline_share_the_budget(models: Path, demo_source: dict[str, torch.nn.Module]) -> None:
    write_vae(models / "vae" / "v.safetensors", demo_source["vae"])
    store = ModelStore(models)
    store.load_pipeline("a.safetensors")
    store.load_vae("v.safetensors", keep=("a.safetensors",))
    assert cached(store) == ["a.safetensors", "v.safetensors"]
    store.load_pipeline("b.safetensors")  # nothing kept: only b stays
    assert cached(store) == ["b.safetensors"]


def test_vae_files_that_do_not_fit_get_clear_errors(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    with pytest.raises(ModelMissing) as missing:
        store.load_vae("sdxl_vae.safetensors")
    assert missing.value.path == tmp_path / "models" / "vae" / "sdxl_vae.safetensors"
    flux_like = {
        "encoder.conv_in.weight": torch.zeros(128, 3, 3, 3),
        "encoder.conv_out.weight": torch.zeros(32, 512, 3, 3),
    }
    save_checkpoint(flux_like, store.folder("vae") / "flux_ae.safetensors")
    with pytest.raises(ModelUnsupported, match="not an SDXL VAE"):
        store.load_vae("flux_ae.safetensors")
    save_checkpoint({"lora_unet_x.lora_down.weight": torch.zeros(4, 4)}, store.folder("vae") / "lora.safetensors")
    with pytest.raises(ModelUnsupported, match="no VAE encoder"):
        store.load_vae("lora.safetensors")
    assert store.memory_report()["models"] == []


def test_free_forgets_everything_and_reports_it(models: Path, pipeline_bytes: int) -> None:
    store = ModelStore(models)
    pipe = store.load_pipeline("a.safetensors")
    freed = store.free()
    assert freed == {
        "freed": [{"kind": "checkpoints", "name": "a.safetensors", "bytes": pipeline_bytes}],
        "freed_bytes": pipeline_bytes,
    }
    assert store.loaded_name is None
    report = store.memory_report()
    assert report["models"] == [] and report["cached_bytes"] == 0 and report["budget_bytes"] is None
    assert report["device"] == "cpu" and report["cuda"] is None
    assert report["process_rss_bytes"] > 0 and report["process_peak_rss_bytes"] >= report["process_rss_bytes"]
    # A holder (a running task) keeps a working pipeline; the cache only forgot it.
    assert model_bytes(pipe) == pipeline_bytes and not pipe.unet.conv_in.weight.is_meta
    assert store.free() == {"freed": [], "freed_bytes": 0}
    assert store.load_pipeline("a.safetensors") is not pipe


def test_the_store_makes_the_safety_checker_folder(tmp_path: Path) -> None:
    ModelStore(tmp_path / "models")
    assert (tmp_path / "models" / "safety_checker").is_dir()
