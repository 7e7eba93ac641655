"""The safety checker behind black_out_nsfw, on tiny CLIP checkers built here that flag everything or nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from engine_helpers import FLAG_ALL, FLAG_NONE, write_safety_checker
from PIL import Image

from fooocus_es.engine.models.safety import SAFETY_CHECKER_FILES, SafetyChecker, safety_checker_installed
from fooocus_es.engine.models.store import SAFETY_CHECKER, ModelMissing, ModelStore, ModelUnsupported, model_bytes


# A cosine distance lies in [-1, 1]: a threshold of -2 is always passed, one of 10 never.
@pytest.fixture(scope="module")
def flag_all(tmp_path_factory: pytest.TempPathFactory) -> SafetyChecker:
    return SafetyChecker.load(write_safety_checker(tmp_path_factory.mktemp("all"), FLAG_ALL), "cpu", torch.float32)


@pytest.fixture(scope="module")
def flag_none(tmp_path_factory: pytest.TempPathFactory) -> SafetyChecker:
    return SafetyChecker.load(write_safety_checker(tmp_path_factory.mktemp("none"), FLAG_NONE), "cpu", torch.float32)


def sample_images() -> list[Image.Image]:
    return [Image.new("RGB", (64, 48), (200, 30, 40)), Image.new("RGBA", (40, 72), (10, 220, 90, 255))]


def test_installed_needs_all_three_files(tmp_path: Path) -> None:
    models = tmp_path / "models"
    assert not safety_checker_installed(models)
    write_safety_checker(models / "safety_checker", FLAG_NONE)
    assert safety_checker_installed(models)
    for name in SAFETY_CHECKER_FILES:
        (models / "safety_checker" / name).rename(tmp_path / name)
        assert not safety_checker_installed(models), name
        (tmp_path / name).rename(models / "safety_checker" / name)


def test_flagged_images_are_blacked_out_at_their_size_and_mode(flag_all: SafetyChecker) -> None:
    images = sample_images()
    assert flag_all.check(images) == [True, True]
    out, flags = flag_all.black_out(images)
    assert flags == [True, True]
    for before, after in zip(images, out, strict=True):
        assert (after.size, after.mode) == (before.size, before.mode)
        assert after.convert("RGB").getextrema() == ((0, 0), (0, 0), (0, 0))


def test_clean_images_come_back_untouched(flag_none: SafetyChecker) -> None:
    images = sample_images()
    out, flags = flag_none.black_out(images)
    assert flags == [False, False]
    assert all(a is b for a, b in zip(out, images, strict=True))
    assert flag_none.check([]) == []


def test_the_store_loads_and_caches_the_checker(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    assert not store.safety_checker_installed()
    with pytest.raises(ModelMissing, match="model.safetensors"):
        store.load_safety_checker()
    write_safety_checker(store.models_dir / "safety_checker", FLAG_ALL)
    checker = store.load_safety_checker()
    assert store.load_safety_checker() is checker
    assert checker.check(sample_images()[:1]) == [True]
    assert store.memory_report()["models"] == [
        {"kind": "safety_checker", "name": SAFETY_CHECKER, "bytes": model_bytes(checker)}
    ]
    assert store.free()["freed"][0]["name"] == SAFETY_CHECKER


def test_a_broken_checker_folder_is_unsupported(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    for name in SAFETY_CHECKER_FILES:
        (store.models_dir / "safety_checker" / name).write_text("{}")
    with pytest.raises(ModelUnsupported, match="safety checker"):
        store.load_safety_checker()
