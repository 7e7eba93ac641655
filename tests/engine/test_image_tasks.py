"""Upscale/vary and inpaint/outpaint through Engine.generate on the demo model, with files on disk.

Every non-fast task diffuses at Fooocus's ~1024 px, so each run takes seconds on a CPU: the cases
here are the ones whose outcome a rule decides (sizes, untouched pixels, what is diffused at all).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from engine_helpers import Hooks, call_sizes
from PIL import Image

from fooocus_es.engine.diffusion.inpaint_patch import patch_active
from fooocus_es.engine.diffusion.pipeline import Engine, GenerationFailed
from fooocus_es.engine.imaging.outpaint import outpaint_pads
from fooocus_es.engine.imaging.sizes import plan_upscale, vae_crop_size, vary_size
from fooocus_es.engine.models.store import ModelStore
from fooocus_es.engine.planning import plan as planning
from fooocus_es.engine.planning.demo_names import DEMO_CHECKPOINT

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning")]

WIDTH, HEIGHT = 160, 128
FEATHER = 32  # Fooocus's paste-back feathers the mask over 32 px (morphological_open)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("image-tasks")
    (root / "inputs").mkdir()
    rng = np.random.default_rng(7)
    Image.fromarray((rng.random((HEIGHT, WIDTH, 3)) * 255).astype(np.uint8)).save(root / "inputs" / "photo.png")
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[50:74, 60:90] = 255
    Image.fromarray(mask).save(root / "inputs" / "mask.png")
    Image.fromarray(np.zeros((HEIGHT, WIDTH), np.uint8)).save(root / "inputs" / "blank.png")
    return root


@pytest.fixture(scope="module")
def engine(demo_models: Path, data_dir: Path) -> Engine:
    torch.set_num_threads(2)
    return Engine(ModelStore(demo_models), data_dir)


def run(engine: Engine, data_dir: Path, **sent: Any) -> tuple[list[np.ndarray], Hooks]:
    body = {"base_model_name": DEMO_CHECKPOINT, "image_seed": 11, "overwrite_step": 2, "style_selections": []}
    params = planning.finalize(planning.merge_layers({**body, "inpaint_engine": "None", **sent}))
    hooks = Hooks()
    images, status = engine.generate(planning.build_plan("t", params, data_dir=data_dir), hooks)
    assert status == "finished"
    return [np.asarray(image.image) for image in images], hooks


def source() -> np.ndarray:
    return np.zeros((HEIGHT, WIDTH, 3), np.uint8)


def test_vary_diffuses_at_fooocus_size_and_strength_matters(engine: Engine, data_dir: Path) -> None:
    subtle, hooks = run(engine, data_dir, uov_method="Vary (Subtle)", uov_input_image="inputs/photo.png")
    width, height = vae_crop_size(*vary_size(WIDTH, HEIGHT))
    assert subtle[0].shape == (height, width, 3)
    assert [s for _, s, _ in hooks.steps] == [1, 2]  # overwrite_step steps run, whatever the strength
    strong, _ = run(engine, data_dir, uov_method="Vary (Strong)", uov_input_image="inputs/photo.png")
    again, _ = run(engine, data_dir, uov_method="Vary (Subtle)", uov_input_image="inputs/photo.png")
    assert np.array_equal(subtle[0], again[0])
    assert not np.array_equal(subtle[0], strong[0])


def test_fast_upscale_is_the_super_resolution_output_without_diffusion(engine: Engine, data_dir: Path) -> None:
    images, hooks = run(
        engine, data_dir, uov_method="Upscale (Fast 2x)", uov_input_image="inputs/photo.png", image_number=3
    )
    expected = plan_upscale(WIDTH, HEIGHT, "Upscale (Fast 2x)")
    assert len(images) == 1 and images[0].shape == (expected.height, expected.width, 3)
    assert hooks.steps == []


UPSCALE_15 = {"uov_method": "Upscale (1.5x)", "uov_input_image": "inputs/photo.png"}  # two 1024-px tiles


@pytest.fixture(scope="module")
def upscaled(engine: Engine, data_dir: Path) -> tuple[list[np.ndarray], Hooks]:
    """Upscale (1.5x) on the single path: its tiles one after another, one pipeline call each."""
    return run(engine, data_dir, **UPSCALE_15)


def test_upscale_runs_the_tiled_pass_at_the_target_size(upscaled: tuple[list[np.ndarray], Hooks]) -> None:
    images, hooks = upscaled
    expected = plan_upscale(WIDTH, HEIGHT, "Upscale (1.5x)")
    assert images[0].shape == (*reversed(vae_crop_size(expected.width, expected.height)), 3)
    total = hooks.steps[-1][2]
    assert total % 2 == 0 and [s for _, s, _ in hooks.steps] == list(range(1, total + 1))


def test_upscale_tiles_denoise_as_rows_of_one_batch(
    engine: Engine, data_dir: Path, upscaled: tuple[list[np.ndarray], Hooks]
) -> None:
    """With max_batch 2 both tiles share every UNet call and one VAE decode; one progress event per
    batched step; the pixels stay within the batching tolerance (tests/engine/test_batching.py) of
    the tiles run one after another."""
    alone, _ = upscaled
    batched = Engine(engine.store, data_dir, max_batch=2)
    with call_sizes(engine.store.load_pipeline(DEMO_CHECKPOINT)) as sizes:
        images, hooks = run(batched, data_dir, **UPSCALE_15)
    steps = 2  # overwrite_step
    assert sizes.unet == [4] * steps and sizes.decoder == [2]  # two tiles x CFG rows per call
    assert hooks.steps == [(0, 2 * (step + 1), 2 * steps) for step in range(steps)]
    assert images[0].shape == alone[0].shape
    assert int(np.abs(images[0].astype(np.int16) - alone[0].astype(np.int16)).max()) <= 2


def test_inpaint_changes_the_mask_and_keeps_far_pixels_bit_identical(engine: Engine, data_dir: Path) -> None:
    original = np.asarray(Image.open(data_dir / "inputs" / "photo.png").convert("RGB"))
    sent = {"inpaint_input_image": "inputs/photo.png", "inpaint_mask_image_upload": "inputs/mask.png"}
    images, _ = run(engine, data_dir, **sent)
    result = images[0]
    assert result.shape == original.shape
    far = np.ones((HEIGHT, WIDTH), bool)
    far[50 - FEATHER : 74 + FEATHER, 60 - FEATHER : 90 + FEATHER] = False
    assert np.array_equal(result[far], original[far])
    assert np.any(result[50:74, 60:90] != original[50:74, 60:90], axis=2).mean() > 0.9
    from_noise, _ = run(engine, data_dir, **sent, inpaint_disable_initial_latent=True)
    assert not np.array_equal(from_noise[0], result)
    assert np.array_equal(from_noise[0][far], original[far])


INPAINT = {"inpaint_input_image": "inputs/photo.png", "inpaint_mask_image_upload": "inputs/mask.png"}
# Fooocus's inpaint engine at 3 steps: its patch comes off after step 2 (the synthetic refiner)
PATCHED = {**INPAINT, "overwrite_step": 3, "inpaint_engine": "v2.6", "image_number": 2}
PATCH_ON = [True, True, False]  # per step: whether the UNet call ran patched


@contextmanager
def patch_states(unet: torch.nn.Module) -> Iterator[list[bool]]:
    """Whether the inpaint patch was on at each UNet call while the block runs."""
    states: list[bool] = []
    handle = unet.register_forward_pre_hook(lambda module, _args: states.append(patch_active(module)))
    try:
        yield states
    finally:
        handle.remove()


# Max abs pixel difference of a batched inpaint image from the same image alone: 2/255 here, 3/255
# measured by `bench/batching.py --task inpaint` (4 images, 4 steps; text to image: 1/255). The
# 1024-px crop is denoised from strength 1, so float rounding of the wider convolutions has all the
# steps to grow in.
INPAINT_BATCH_TOLERANCE = 3


@dataclass
class PatchedRun:
    images: list[np.ndarray]
    patch_on: list[bool]
    unet_restored: bool


def run_patched(engine: Engine, data_dir: Path) -> PatchedRun:
    unet = engine.store.load_pipeline(DEMO_CHECKPOINT).unet
    before = {name: tensor.clone() for name, tensor in unet.state_dict().items()}
    with patch_states(unet) as states:
        images, _ = run(engine, data_dir, **PATCHED)
    restored = all(torch.equal(before[name], tensor) for name, tensor in unet.state_dict().items())
    return PatchedRun(images, states, restored)


@pytest.fixture(scope="module")
def patched_alone(engine: Engine, data_dir: Path) -> PatchedRun:
    """v2.6 on the single path: the task's two images one after another."""
    return run_patched(engine, data_dir)


def far_from_mask() -> np.ndarray:
    far = np.ones((HEIGHT, WIDTH), bool)
    far[50 - FEATHER : 74 + FEATHER, 60 - FEATHER : 90 + FEATHER] = False
    return far


def test_fooocus_inpaint_engine_patches_the_unet_only_for_the_task(
    engine: Engine, data_dir: Path, patched_alone: PatchedRun
) -> None:
    """v2.6 on the demo model: its tiny head + patch files are generated and applied for the first
    80% of the steps, then removed."""
    original = np.asarray(Image.open(data_dir / "inputs" / "photo.png").convert("RGB"))
    plain, _ = run(engine, data_dir, **INPAINT, overwrite_step=PATCHED["overwrite_step"])
    patched = patched_alone.images
    assert not np.array_equal(plain[0], patched[0])
    assert np.array_equal(patched[0][far_from_mask()], original[far_from_mask()])
    assert patched_alone.patch_on == PATCH_ON * 2  # one image after the other, CFG in each call
    assert patched_alone.unet_restored


def test_inpaint_images_denoise_as_rows_of_one_batch(
    engine: Engine, data_dir: Path, patched_alone: PatchedRun
) -> None:
    """With max_batch 2 an inpaint task's two images share every UNet call and one VAE decode, each
    with its own seed and mask blend; the patch comes off for both at the switch step; each keeps
    its alone pixels (within INPAINT_BATCH_TOLERANCE), its far pixels exactly, and the UNet is left
    as it was. (Without the patch the same rows run the same
    blend: the plain engine only skips `_patch_off_at_switch`.)"""
    original = np.asarray(Image.open(data_dir / "inputs" / "photo.png").convert("RGB"))
    batched = Engine(engine.store, data_dir, max_batch=2)
    with call_sizes(engine.store.load_pipeline(DEMO_CHECKPOINT)) as sizes:
        result = run_patched(batched, data_dir)
    steps = PATCHED["overwrite_step"]
    assert sizes.unet == [4] * steps and sizes.decoder == [2]  # two images x CFG rows per call
    assert result.patch_on == PATCH_ON and result.unet_restored
    assert not np.array_equal(result.images[0], result.images[1])  # each row its own seed
    for image, single in zip(result.images, patched_alone.images, strict=True):
        assert int(np.abs(image.astype(np.int16) - single.astype(np.int16)).max()) <= INPAINT_BATCH_TOLERANCE
        assert np.array_equal(image[far_from_mask()], original[far_from_mask()])


def test_outpaint_extends_the_image_and_keeps_the_far_original(engine: Engine, data_dir: Path) -> None:
    images, _ = run(engine, data_dir, inpaint_input_image="inputs/photo.png", outpaint_selections=["Left", "Bottom"])
    pads = outpaint_pads(WIDTH, HEIGHT, ["Left", "Bottom"])
    assert pads.left == int(WIDTH * 0.3) and pads.bottom == int(HEIGHT * 0.3)
    result = images[0]
    assert result.shape == (HEIGHT + pads.bottom, WIDTH + pads.left, 3)
    original = np.asarray(Image.open(data_dir / "inputs" / "photo.png").convert("RGB"))
    kept = result[: HEIGHT - FEATHER, pads.left + FEATHER :]
    assert np.array_equal(kept, original[: HEIGHT - FEATHER, FEATHER:])


def test_debug_preprocessor_returns_the_processed_mask(engine: Engine, data_dir: Path) -> None:
    images, hooks = run(
        engine,
        data_dir,
        inpaint_input_image="inputs/photo.png",
        inpaint_mask_image_upload="inputs/mask.png",
        inpaint_erode_or_dilate=4,
        debugging_inpaint_preprocessor=True,
    )
    mask = images[0][:, :, 0]
    assert hooks.steps == []
    assert mask[50:74, 60:90].min() == 255 and mask[46:78, 56:94].min() == 255  # dilated by 4
    assert mask[:40].max() == 0


def test_an_empty_mask_fails_instead_of_silently_generating(engine: Engine, data_dir: Path) -> None:
    with pytest.raises(GenerationFailed, match="selects nothing"):
        run(engine, data_dir, inpaint_input_image="inputs/photo.png", inpaint_mask_image_upload="inputs/blank.png")
