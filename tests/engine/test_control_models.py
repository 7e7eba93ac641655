"""PyraCanny / CPDS control models: Control-LoRA merge, full ControlNets, the cache, softness and residuals.

Fixtures are built in code from the tiny demo UNet, saved as real safetensors files and read by the
real loader (image-prompts.md §7, Control-LoRA row).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch
from diffusers import ControlNetModel
from safetensors.torch import save_file

from fooocus_es.engine.demo.checkpoint import build_demo_models
from fooocus_es.engine.demo.control_lora_files import (
    DEMO_CONTROL_LORAS,
    DEMO_RANK,
    build_demo_control_lora,
    write_demo_control_loras,
)
from fooocus_es.engine.diffusion.control_residuals import ActiveControl, control_residuals, fit_hint, soften
from fooocus_es.engine.models.control_models import (
    CONTROL_LORA_MARKER,
    ControlModelCache,
    base_state_dict,
    clean_unet,
    controlnet_ldm_names,
    is_control_lora_target,
    load_control_model,
)

F32 = torch.float32


@pytest.fixture(scope="module")
def unet():
    return build_demo_models()["unet"]


@pytest.fixture(scope="module")
def described(unet):
    """(file tensors, the perturbed ControlNet they describe) for seed 1."""
    return build_demo_control_lora(unet, 1)


@pytest.fixture(scope="module")
def lora_file(described, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("controlnet") / "control-lora-test.safetensors"
    save_file(described[0], str(path))
    return path


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_demo_control_loras(tmp_path_factory.mktemp("demo_controlnet"))


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[key].float() - b[key].float()).abs().max()) for key in a)


def targeted_biases(state: dict[str, torch.Tensor]) -> list[str]:
    return [key for key in state if key.endswith(".bias") and is_control_lora_target(key.removesuffix(".bias"))]


def unet_inputs(batch: int = 2, size: int = 8) -> dict:
    generator = torch.Generator().manual_seed(5)
    return {
        "sample": torch.randn(batch, 4, size, size, generator=generator),
        "timestep": torch.tensor(700),
        "encoder_hidden_states": torch.randn(batch, 7, 80, generator=generator),
        "added_cond_kwargs": {
            "text_embeds": torch.randn(batch, 32, generator=generator),
            "time_ids": torch.tensor([[size * 8, size * 8, 0, 0, size * 8, size * 8]] * batch, dtype=F32),
        },
    }


def hint(height: int, width: int, seed: int = 3) -> torch.Tensor:
    return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed))


def run_unet(unet, inputs: dict, residuals=None) -> torch.Tensor:
    extra = {}
    if residuals is not None:
        extra = {"down_block_additional_residuals": residuals[0], "mid_block_additional_residual": residuals[1]}
    with torch.no_grad():
        return unet(**inputs, return_dict=False, **extra)[0]


# -- Control-LoRA merge ----------------------------------------------------------------------------
def test_control_lora_file_is_in_sai_layout(described) -> None:
    tensors, _ = described
    assert CONTROL_LORA_MARKER in tensors
    ups = [key for key in tensors if key.endswith(".up")]
    assert len(ups) > 100 and all(key.removesuffix(".up") + ".down" in tensors for key in ups)
    assert all(tensors[key].shape[1] == DEMO_RANK for key in ups)
    for expected in ("input_hint_block.0.weight", "input_hint_block.14.bias", "zero_convs.8.0.weight",
                     "middle_block_out.0.bias", "input_blocks.1.0.in_layers.2.up", "input_blocks.3.0.op.down",
                     "time_embed.0.up", "label_emb.0.2.down", "middle_block.1.proj_in.bias"):  # fmt: skip
        assert expected in tensors, expected
    assert not any(key.startswith(("down_blocks.", "controlnet_")) for key in tensors)  # LDM names only


def test_control_lora_merge_equals_the_network_it_was_built_from(unet, described, lora_file: Path) -> None:
    _, expected = described
    model = load_control_model(lora_file, unet, "cpu", F32)
    assert isinstance(model, ControlNetModel) and not model.training
    assert max_diff(model.state_dict(), expected.state_dict()) < 1e-6
    # The LoRA-targeted layers' biases are the file's, not the base's.
    base = ControlNetModel.from_unet(clean_unet(unet)).state_dict()
    biases = targeted_biases(expected.state_dict())
    assert len(biases) > 50
    assert all(not torch.equal(base[key], model.state_dict()[key]) for key in biases)


@pytest.mark.filterwarnings("ignore:While injecting the PEFT adapters")
def test_diffusers_lora_adapter_drops_the_biases_ours_keeps(unet, described, lora_file: Path) -> None:
    """Why we merge ourselves: diffusers' own Control-LoRA path leaves those biases at the base values."""
    _, expected = described
    theirs = ControlNetModel.from_unet(unet)
    base = copy.deepcopy(theirs.state_dict())
    theirs.load_lora_adapter(str(lora_file), prefix=None, controlnet_config=theirs.config)
    state = theirs.state_dict()
    biases = targeted_biases(expected.state_dict())
    stuck = [key for key in biases if torch.equal(state[key.replace(".bias", ".base_layer.bias")], base[key])]
    assert len(stuck) == len(biases)
    ours = load_control_model(lora_file, unet, "cpu", F32).state_dict()
    assert all(torch.equal(ours[key], expected.state_dict()[key]) for key in biases)


def test_merge_uses_the_base_weights_not_the_active_peft_adapters(unet, lora_file: Path) -> None:
    from peft import LoraConfig

    wrapped = copy.deepcopy(unet)
    targets = ["to_q", "to_k", "to_v", "to_out.0", "conv1", "proj_in"]
    wrapped.add_adapter(LoraConfig(r=4, init_lora_weights=False, target_modules=targets))
    inputs = unet_inputs()
    assert not torch.allclose(run_unet(wrapped, inputs), run_unet(unet, inputs))  # the adapter is active
    with pytest.raises(RuntimeError):
        ControlNetModel.from_unet(wrapped)  # the reason clean_unet exists

    clean = clean_unet(wrapped)
    assert max_diff(clean.state_dict(), unet.state_dict()) == 0.0
    assert not any("lora_" in key or "base_layer" in key for key in clean.state_dict())
    assert torch.equal(run_unet(clean, inputs), run_unet(unet, inputs))
    assert clean.state_dict()["conv_in.weight"].data_ptr() != unet.state_dict()["conv_in.weight"].data_ptr()
    ControlNetModel.from_unet(clean)  # works on the clean copy

    merged_on_wrapped = load_control_model(lora_file, wrapped, "cpu", F32).state_dict()
    merged_on_plain = load_control_model(lora_file, unet, "cpu", F32).state_dict()
    assert max_diff(merged_on_wrapped, merged_on_plain) == 0.0


def test_base_part_matches_from_unet(unet) -> None:
    """The meta-skeleton path takes exactly what from_unet copies from the UNet."""
    reference = ControlNetModel.from_unet(unet).state_dict()
    base = base_state_dict(unet)
    shared = [key for key in reference if not key.startswith("controlnet_")]
    assert shared and all(torch.equal(reference[key], base[key]) for key in shared)


# -- full ControlNets and refusals ----------------------------------------------------------------
def test_full_controlnet_loads_in_diffusers_and_ldm_names(unet, described, tmp_path: Path) -> None:
    _, net = described
    state = {key: t.contiguous() for key, t in net.state_dict().items()}
    diffusers_file = tmp_path / "controlnet_diffusers.safetensors"
    save_file(state, str(diffusers_file))
    names = controlnet_ldm_names(list(state), unet.config)
    ldm_file = tmp_path / "controlnet_ldm.safetensors"
    save_file({"control_model." + names[key]: t for key, t in state.items()}, str(ldm_file))

    for path in (diffusers_file, ldm_file):
        model = load_control_model(path, unet, "cpu", F32)
        assert max_diff(model.state_dict(), state) == 0.0, path.name


def test_full_controlnet_with_its_own_config_and_hint_widths(unet, tmp_path: Path) -> None:
    """A hint encoder of other widths: read from the tensors, or from a config.json beside the file."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(9)
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16, 32, 32))
    state = {key: t.contiguous() for key, t in net.state_dict().items()}
    save_file(state, str(tmp_path / "bare.safetensors"))
    assert max_diff(load_control_model(tmp_path / "bare.safetensors", unet, "cpu", F32).state_dict(), state) == 0.0
    folder = tmp_path / "folder"
    net.save_pretrained(folder)
    model = load_control_model(folder / "diffusion_pytorch_model.safetensors", unet, "cpu", F32)
    assert max_diff(model.state_dict(), state) == 0.0


def test_a_file_that_is_no_control_model_raises_naming_it(unet, tmp_path: Path) -> None:
    path = tmp_path / "not_a_controlnet.safetensors"
    save_file({key: t.contiguous() for key, t in list(unet.state_dict().items())[:10]}, str(path))
    with pytest.raises(ValueError, match="not_a_controlnet.safetensors.*is not a control model"):
        load_control_model(path, unet, "cpu", F32)
    garbage = tmp_path / "broken.safetensors"
    garbage.write_bytes(b"not safetensors at all")
    with pytest.raises(ValueError, match="broken.safetensors.*not a readable"):
        load_control_model(garbage, unet, "cpu", F32)


def test_control_lora_for_another_base_raises_naming_it(unet, described, tmp_path: Path) -> None:
    tensors = dict(described[0])
    key = "input_blocks.1.0.in_layers.2.down"
    tensors[key] = torch.zeros(DEMO_RANK, 16, 3, 3)  # another base's width
    path = tmp_path / "other-base.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(ValueError, match="other-base.safetensors.*does not fit"):
        load_control_model(path, unet, "cpu", F32)
    missing = {k: t for k, t in described[0].items() if not k.startswith("zero_convs.3.")}
    save_file(missing, str(tmp_path / "incomplete.safetensors"))
    with pytest.raises(ValueError, match="incomplete.safetensors.*lacks"):
        load_control_model(tmp_path / "incomplete.safetensors", unet, "cpu", F32)


def test_loaded_in_the_requested_dtype(unet, lora_file: Path) -> None:
    model = load_control_model(lora_file, unet, "cpu", torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


# -- cache -------------------------------------------------------------------------------------------
def test_cache_keeps_one_per_file_and_base_and_drops_the_oldest(unet, described, tmp_path: Path) -> None:
    paths = []
    for name in ("a", "b", "c"):
        paths.append(tmp_path / f"{name}.safetensors")
        save_file(described[0], str(paths[-1]))
    cache = ControlModelCache("cpu", F32, max_entries=2)
    first = cache.get(paths[0], unet)
    assert cache.get(paths[0], unet) is first
    other_base = copy.deepcopy(unet)
    assert cache.get(paths[0], other_base) is not first
    assert cache.get(paths[0], unet) is first  # now (a, other_base) is the least recently used
    cache.get(paths[1], unet)  # evicts it
    assert len(cache) == 2 and cache.get(paths[0], unet) is first
    cache.get(paths[2], unet)  # evicts b
    assert len(cache) == 2 and cache.get(paths[0], unet) is first
    os.utime(paths[0], ns=(1, 1))  # a replaced file loads anew
    assert cache.get(paths[0], unet) is not first
    with pytest.raises(ValueError):
        ControlModelCache("cpu", F32, max_entries=0)


# -- softness, residuals, hints ----------------------------------------------------------------------
def test_soften_matches_hand_values() -> None:
    ones = [torch.ones(2) for _ in range(10)]
    out = soften(ones, softness=0.25, weight=0.5)
    hand = [0.375, 0.388889, 0.402778, 0.416667, 0.430556, 0.444444, 0.458333, 0.472222, 0.486111, 0.5]
    assert [round(float(t[0]), 6) for t in out] == hand
    assert [float(t[0]) for t in soften(ones[:3], softness=1.0, weight=2.0)] == [0.0, 1.0, 2.0]
    assert [float(t[0]) for t in soften(ones, softness=0.0, weight=1.0)] == [1.0] * 10


def test_control_residuals_change_the_unet_output(unet, demo_files: list[Path]) -> None:
    model = load_control_model(demo_files[0], unet, "cpu", F32)
    inputs = unet_inputs()
    control = ActiveControl(model, hint(64, 64), weight=1.0, softness=0.25)
    with torch.no_grad():
        residuals = control_residuals([control], **inputs)
    assert residuals is not None
    down, mid = residuals
    assert len(down) == 9  # the tiny UNet has SDXL's 9 down residuals (+ 1 mid)
    plain, controlled = run_unet(unet, inputs), run_unet(unet, inputs, residuals)
    assert torch.isfinite(controlled).all()
    assert float((controlled - plain).abs().mean()) > 1e-2 * float(plain.abs().mean())

    half = ActiveControl(model, hint(64, 64), weight=0.5, softness=0.25)
    with torch.no_grad():
        both = control_residuals([control, half], **inputs)
    assert both is not None
    assert torch.allclose(both[1], mid * 1.5, atol=1e-5)  # summed; the mid residual only scales by weight
    assert control_residuals([], **inputs) is None
    assert control_residuals([ActiveControl(model, hint(64, 64), weight=0.0)], **inputs) is None


def test_hint_is_fitted_to_the_sample_and_cached_per_size() -> None:
    columns = torch.arange(20, dtype=F32).expand(1, 3, 10, 20)  # wide: value = column
    fitted = fit_hint(columns, 16, 16)
    assert fitted.shape == (1, 3, 16, 16)
    # centre crop to 10×10 (columns 5..14), then nearest-exact up to 16: source floor((j + 0.5) · 10/16)
    assert fitted[0, 0, 0].tolist() == [5 + int((j + 0.5) * 10 / 16) for j in range(16)]
    assert fitted[0, 0, 0].tolist() == [5, 5, 6, 7, 7, 8, 9, 9, 10, 10, 11, 12, 12, 13, 14, 14]
    rows = torch.arange(20, dtype=F32)[:, None].expand(1, 3, 20, 10)  # tall: value = row
    assert fit_hint(rows, 10, 10)[0, 0, :, 0].tolist() == list(range(5, 15))
    same = hint(32, 32)
    assert fit_hint(same, 32, 32) is same

    class Model(torch.nn.Module):
        dtype = torch.bfloat16

    control = ActiveControl(Model(), hint(40, 24), weight=1.0)
    sample = torch.zeros(2, 4, 4, 6)
    batch = control.hint_batch(sample)
    assert batch.shape == (2, 3, 32, 48) and batch.dtype == torch.bfloat16
    assert torch.equal(batch[0], batch[1])
    assert control.hint_batch(sample) is batch  # cached per size
    assert control.hint_batch(torch.zeros(1, 4, 5, 5)).shape == (1, 3, 40, 40)


# -- demo files ----------------------------------------------------------------------------------------
def test_demo_files_load_with_the_demo_unet_and_are_left_alone(unet, demo_files: list[Path]) -> None:
    assert [path.name for path in demo_files] == list(DEMO_CONTROL_LORAS)
    canny, cpds = (load_control_model(path, unet, "cpu", F32).state_dict() for path in demo_files)
    assert max_diff(canny, cpds) > 0  # seeded by file name
    zero_convs = [key for key in canny if key.startswith("controlnet_down_blocks.") and key.endswith(".weight")]
    assert all(float(canny[key].abs().max()) > 0 for key in zero_convs)
    stamps = [path.stat().st_mtime_ns for path in demo_files]
    contents = [path.read_bytes() for path in demo_files]
    assert write_demo_control_loras(demo_files[0].parent) == demo_files
    assert [path.stat().st_mtime_ns for path in demo_files] == stamps
    write_demo_control_loras(demo_files[0].parent, overwrite=True)
    assert [path.read_bytes() for path in demo_files] == contents  # same bytes on every run


def test_real_sdxl_layout_converts_completely() -> None:
    """SDXL's own layout (10-deep transformers, rank 128), on the meta device: every ControlNet tensor is
    found in an SAI-layout file and nothing is left over, so a real Control-LoRA merges with strict=True."""
    from diffusers import UNet2DConditionModel

    from fooocus_es.engine.demo.checkpoint import TINY_CONFIG_DIR
    from fooocus_es.engine.models import control_models

    with torch.device("meta"):
        sdxl = UNet2DConditionModel.from_config(
            UNet2DConditionModel.load_config(TINY_CONFIG_DIR.parent / "base" / "unet")
        )
        skeleton = ControlNetModel.from_unet(sdxl, load_weights_from_unet=False)
    expected = skeleton.state_dict()
    names = controlnet_ldm_names(list(expected), sdxl.config)
    assert names["down_blocks.2.attentions.1.transformer_blocks.9.attn2.to_k.weight"] == (
        "input_blocks.8.1.transformer_blocks.9.attn2.to_k.weight"
    )
    assert names["controlnet_cond_embedding.conv_out.weight"] == "input_hint_block.14.weight"
    file: dict[str, torch.Tensor] = {CONTROL_LORA_MARKER: torch.ones(1)}
    for key, tensor in expected.items():
        module, kind = key.rsplit(".", 1)
        if kind == "weight" and is_control_lora_target(module):
            ldm = names[key].removesuffix(".weight")
            tail = (1, 1) if tensor.ndim == 4 else ()
            file[ldm + ".up"] = torch.empty(tensor.shape[0], 128, *tail, device="meta")
            file[ldm + ".down"] = torch.empty(128, *tensor.shape[1:], device="meta")
        else:
            file[names[key]] = torch.empty_like(tensor)
    state, _, merged = control_models._control_lora_state(Path("sdxl.safetensors"), file, sdxl, "meta", torch.float16)
    assert state.keys() == expected.keys()
    assert all(state[key].shape == expected[key].shape for key in expected)
    assert len(merged) == sum(key.endswith(".up") for key in file) > 300
