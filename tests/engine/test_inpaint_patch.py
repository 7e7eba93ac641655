"""Fooocus's inpaint engine (head + .fooocus.patch) on the tiny demo UNet: load, apply, restore, refuse."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fooocus_es.engine.demo.inpaint_patch import write_demo_inpaint_files
from fooocus_es.engine.diffusion.inpaint_patch import (
    INPAINT_HEAD,
    PATCH_FILES,
    InpaintFilesMissing,
    InpaintPatchUnsupported,
    decode_fooocus_diff,
    fooocus_latent_mask,
    head_input,
    load_inpaint_patch,
    neutral_masked_pixels,
    unwrap_unet,
)
from fooocus_es.engine.models.store import ModelStore
from fooocus_es.engine.planning.demo_names import DEMO_CHECKPOINT

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:__array_wrap__ must accept:DeprecationWarning"),
]

LATENT = 8  # 64x64 pixels


@pytest.fixture(scope="module")
def unet(demo_models: Path):
    torch.set_num_threads(2)
    return ModelStore(demo_models).load_pipeline(DEMO_CHECKPOINT).unet


@pytest.fixture(scope="module")
def inpaint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("inpaint")
    write_demo_inpaint_files(folder, "v2.6")
    return folder


@pytest.fixture(scope="module")
def patch(inpaint_dir: Path, unet):
    return load_inpaint_patch(inpaint_dir, "v2.6", unet)


def unet_inputs(unet, batch: int = 2) -> dict:
    """A CFG-sized batch for one direct UNet call."""
    gen = torch.Generator().manual_seed(3)
    cfg = unet.config
    text_dim = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
    return {
        "sample": torch.randn(batch, 4, LATENT, LATENT, generator=gen),
        "timestep": torch.tensor(500),
        "encoder_hidden_states": torch.randn(batch, 4, cfg.cross_attention_dim, generator=gen),
        "added_cond_kwargs": {
            "text_embeds": torch.randn(batch, text_dim, generator=gen),
            "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]] * batch),
        },
    }


def run(unet, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return unet(**inputs, return_dict=False)[0]


def a_head_input(batch: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(5)
    mask = torch.zeros(batch, 1, LATENT, LATENT)
    mask[..., 2:6, 3:7] = 1
    return head_input(mask, torch.randn(batch, 4, LATENT, LATENT, generator=gen))


def snapshot(unet) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in unet.state_dict().items()}


def assert_identical(unet, before: dict[str, torch.Tensor]) -> None:
    after = unet.state_dict()
    assert after.keys() == before.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == []


def test_demo_files_load_and_cover_the_unet(inpaint_dir: Path, patch, unet) -> None:
    assert (inpaint_dir / INPAINT_HEAD).is_file() and (inpaint_dir / PATCH_FILES["v2.6"]).is_file()
    assert sorted(patch.parameter_names) == sorted(name for name, _ in unet.named_parameters())
    assert patch.head_weight.shape == (unet.config.block_out_channels[0], 5, 3, 3)


def test_applied_changes_output_and_restores_bit_exactly(patch, unet) -> None:
    inputs = unet_inputs(unet)
    before_weights = snapshot(unet)
    before = run(unet, inputs)
    with patch.applied(unet, a_head_input()):
        inside = run(unet, inputs)
        assert not torch.equal(unet.conv_in.weight, before_weights["conv_in.weight"])
    after = run(unet, inputs)
    assert not torch.allclose(inside, before)
    assert torch.equal(after, before)
    assert_identical(unet, before_weights)
    assert not unet.conv_in._forward_hooks


def test_restores_when_the_body_raises(patch, unet) -> None:
    inputs = unet_inputs(unet, batch=1)
    before_weights = snapshot(unet)
    before = run(unet, inputs)
    with pytest.raises(KeyboardInterrupt), patch.applied(unet, a_head_input()):
        run(unet, inputs)
        raise KeyboardInterrupt  # e.g. the task was stopped
    assert_identical(unet, before_weights)
    assert torch.equal(run(unet, inputs), before)
    with patch.applied(unet, a_head_input()) as applied:  # usable again, and restorable early
        assert applied.active
        applied.restore()  # e.g. at Fooocus's refiner switch
        assert not applied.active and not unet.conv_in._forward_hooks
        assert_identical(unet, before_weights)
        applied.restore()
    assert_identical(unet, before_weights)


def test_weights_and_feature_are_fooocus_arithmetic(patch, unet) -> None:
    x = a_head_input()
    expected_feature = F.conv2d(F.pad(x, (1, 1, 1, 1), "replicate"), patch.head_weight)
    assert torch.equal(patch.head_feature(x), expected_feature)
    assert expected_feature.shape == (1, unet.config.block_out_channels[0], LATENT, LATENT)

    original = unet.conv_in.weight.detach().clone()
    sample = unet_inputs(unet)["sample"]  # a CFG batch of 2 against a head batch of 1
    seen: list[torch.Tensor] = []
    with patch.applied(unet, x), torch.no_grad():
        # registered after the patch's hook, so it sees conv_in's output with the feature added
        handle = unet.conv_in.register_forward_hook(lambda m, a, out: seen.append(out.clone()))
        try:
            unet.conv_in(sample)
        finally:
            handle.remove()
        conv = unet.conv_in
        raw = F.conv2d(sample, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        patched_weight = conv.weight.detach().clone()
    diff = patch._diffs[patch.parameter_names.index("conv_in.weight")]
    decoded = decode_fooocus_diff(diff.w1, diff.w_min, diff.w_max)
    assert torch.equal(patched_weight, (original.to(torch.float32) + decoded).to(original.dtype))
    assert torch.equal(seen[0], raw + expected_feature.repeat(2, 1, 1, 1))


def test_decode_matches_hand_computation() -> None:
    w1 = torch.tensor([[0, 255], [51, 128]], dtype=torch.uint8)
    w_min, w_max = torch.tensor(-0.5, dtype=torch.float16), torch.tensor(1.5, dtype=torch.float16)
    hand = torch.tensor([[-0.5, 1.5], [51 / 255 * 2 - 0.5, 128 / 255 * 2 - 0.5]], dtype=torch.float32)
    decoded = decode_fooocus_diff(w1, w_min, w_max)
    assert decoded.dtype == torch.float32
    assert torch.allclose(decoded, hand, atol=1e-6)


def test_head_input_and_masks() -> None:
    mask = torch.zeros(1, 16, 16)
    mask[0, 0:3, 9:10] = 1  # touches latent cells (0, 1)
    latent_mask = fooocus_latent_mask(mask, (2, 2))
    assert latent_mask.tolist() == [[[[0.0, 1.0], [0.0, 0.0]]]]
    latents = torch.randn(1, 4, 2, 2)
    x = head_input(latent_mask, latents)
    assert x.shape == (1, 5, 2, 2) and torch.equal(x[:, :1], latent_mask) and torch.equal(x[:, 1:], latents)
    with pytest.raises(ValueError):
        head_input(latent_mask, torch.randn(1, 4, 3, 3))
    pixels = torch.ones(1, 3, 16, 16)
    assert neutral_masked_pixels(pixels, mask)[0, :, 1, 9].tolist() == [0.0, 0.0, 0.0]
    assert neutral_masked_pixels(pixels, mask)[0, :, 8, 8].tolist() == [1.0, 1.0, 1.0]


def test_wrapper_is_unwrapped(patch, unet) -> None:
    class Wrapper(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.unet = inner

    wrapper = Wrapper(unet)
    assert unwrap_unet(wrapper) is unet
    before_weights = snapshot(unet)
    with patch.applied(wrapper, a_head_input()):
        assert unet.conv_in._forward_hooks
        with pytest.raises(RuntimeError, match="already applied"), patch.applied(unet, a_head_input()):
            pass
    assert_identical(unet, before_weights)


def write(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def test_foreign_patches_are_refused(tmp_path: Path, inpaint_dir: Path, unet) -> None:
    (tmp_path / INPAINT_HEAD).write_bytes((inpaint_dir / INPAINT_HEAD).read_bytes())
    patch_path = tmp_path / PATCH_FILES["v2.6"]
    one = torch.zeros(1, dtype=torch.uint8)
    scalar = torch.tensor(0.0)

    sdxl_conv_in = torch.zeros(320, 4, 3, 3, dtype=torch.uint8)
    write(patch_path, {"diffusion_model.input_blocks.0.0.weight": (sdxl_conv_in, scalar, scalar)})
    with pytest.raises(InpaintPatchUnsupported, match="another shape"):
        load_inpaint_patch(tmp_path, "v2.6", unet)

    write(patch_path, {"diffusion_model.input_blocks.99.1.proj_in.weight": (one, scalar, scalar)})
    with pytest.raises(InpaintPatchUnsupported, match="match no tensor"):
        load_inpaint_patch(tmp_path, "v2.6", unet)

    write(patch_path, {"diffusion_model.out.2.bias": torch.zeros(4)})
    with pytest.raises(InpaintPatchUnsupported, match="w1, w_min, w_max"):
        load_inpaint_patch(tmp_path, "v2.6", unet)

    write(patch_path, {})
    with pytest.raises(InpaintPatchUnsupported):
        load_inpaint_patch(tmp_path, "v2.6", unet)

    write(tmp_path / INPAINT_HEAD, {"head": torch.zeros(320, 5, 3, 3)})  # the real SDXL head's shape
    write(patch_path, {"diffusion_model.out.2.bias": (torch.zeros(4, dtype=torch.uint8), scalar, scalar)})
    with pytest.raises(InpaintPatchUnsupported, match=r"\(320, 5, 3, 3\)"):
        load_inpaint_patch(tmp_path, "v2.6", unet)

    with pytest.raises(InpaintFilesMissing):
        load_inpaint_patch(tmp_path, "v2.5", unet)
    with pytest.raises(InpaintPatchUnsupported, match="unknown"):
        load_inpaint_patch(tmp_path, "v9", unet)


CALLS: list[str] = []


def _record(arg: str) -> None:
    CALLS.append(arg)


class _Payload:
    def __reduce__(self):
        return (_record, ("payload ran",))


@pytest.mark.parametrize("target", ["head", "patch"])
def test_pickle_payloads_are_refused(tmp_path: Path, inpaint_dir: Path, unet, target: str) -> None:
    for name in (INPAINT_HEAD, PATCH_FILES["v1"]):
        (tmp_path / name).write_bytes((inpaint_dir / INPAINT_HEAD).read_bytes())
    write(tmp_path / PATCH_FILES["v1"], torch.load(inpaint_dir / PATCH_FILES["v2.6"], weights_only=True))
    victim = tmp_path / (INPAINT_HEAD if target == "head" else PATCH_FILES["v1"])
    write(victim, {"head": torch.zeros(1), "x": _Payload()})
    with pytest.raises(InpaintPatchUnsupported, match="arbitrary pickle"):
        load_inpaint_patch(tmp_path, "v1", unet)
    assert CALLS == []


def test_works_through_peft_lora_layers_and_inference_mode(
    demo_models: Path, inpaint_dir: Path, tmp_path: Path
) -> None:
    from fooocus_es.engine.demo.loras import write_kohya_lora
    from fooocus_es.engine.models.loras import LoraSpec, activate_loras

    pipe = ModelStore(demo_models).load_pipeline(DEMO_CHECKPOINT)  # its own UNet: adapters stay here
    write_kohya_lora(tmp_path / "l.safetensors", pipe.unet, seed=7)
    activate_loras(pipe, [LoraSpec("l.safetensors", 1.0)], lambda name: tmp_path / name)
    unet = pipe.unet
    wrapped = [n for n, _ in unet.named_parameters() if ".base_layer." in n]
    assert wrapped  # the attention projections are peft layers now
    patch = load_inpaint_patch(inpaint_dir, "v2.6", unet)  # names still map, through base_layer
    before_weights = snapshot(unet)
    inputs = unet_inputs(unet, batch=1)
    before = run(unet, inputs)
    with torch.inference_mode():
        with patch.applied(unet, a_head_input()):
            base = unet.get_parameter(wrapped[0])
            assert not torch.equal(base, before_weights[wrapped[0]])
            inside = run(unet, inputs)
        after = run(unet, inputs)
    assert not torch.equal(inside, before) and torch.equal(after, before)
    assert_identical(unet, before_weights)
