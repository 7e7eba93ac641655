"""Per-task LoRAs on the shared tiny SDXL pipeline: exact switching, refusals, eviction, demo LoRAs."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog.testing
import torch
from safetensors.torch import save_file

from fooocus_es.engine.demo.checkpoint import TINY_CONFIG_DIR
from fooocus_es.engine.demo.loras import DEMO_LORA_NAMES, ensure_demo_lora, write_kohya_lora
from fooocus_es.engine.models.loras import LoraSpec, LoraUnsupported, activate_loras, deactivate_loras, merge_loras
from fooocus_es.engine.models.store import ModelStore
from fooocus_es.engine.planning.demo_names import DEMO_CHECKPOINT

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:__array_wrap__ must accept:DeprecationWarning"),
]

PROMPT = "a photo of a cat"
FEW_LAYERS = ("attn1.to_k", "attn2.to_v")


def new_pipe(models: Path):
    """A pipeline of its own (a fresh ModelStore): no adapter has ever touched it."""
    return ModelStore(models).load_pipeline(DEMO_CHECKPOINT)


def latents(pipe) -> torch.Tensor:
    out = pipe(
        prompt=PROMPT,
        num_inference_steps=2,
        width=64,
        height=64,
        output_type="latent",
        generator=torch.Generator().manual_seed(1),
    )
    return out.images


# A pipeline whose LoRA layers are disabled still runs peft's wrappers, and torch 2.14's CPU GEMMs
# may then round differently from a never-wrapped pipeline's (measured: at most 7e-6 on latents of
# magnitude ~3). A LoRA left active even at weight 0.01 moves them by 1.5e-2, so 1e-4 tells them apart.
CLEAN_ATOL = 1e-4


def matches_clean(out: torch.Tensor, clean: dict[str, torch.Tensor]) -> bool:
    return torch.allclose(out, clean["latents"], rtol=0, atol=CLEAN_ATOL)


def prompt_embeds(pipe) -> torch.Tensor:
    with torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt(PROMPT, device="cpu", do_classifier_free_guidance=False)
    return torch.cat([embeds.flatten(), pooled.flatten()])


@pytest.fixture(scope="module")
def pipe(demo_models: Path):
    torch.set_num_threads(2)
    return new_pipe(demo_models)


@pytest.fixture(scope="module")
def clean(demo_models: Path) -> dict[str, torch.Tensor]:
    """Latents and prompt embeddings of a pipeline that never saw a LoRA."""
    torch.set_num_threads(2)
    never = new_pipe(demo_models)
    return {"latents": latents(never), "embeds": prompt_embeds(never)}


@pytest.fixture(scope="module")
def loras(tmp_path_factory: pytest.TempPathFactory, pipe) -> Path:
    """kohya-format LoRAs for the tiny model: a, b, c (UNet), te (UNet + both text encoders).

    They adapt a few layers only: peft's injection time grows with the number of layers.
    """
    folder = tmp_path_factory.mktemp("loras")
    for seed, name in enumerate(("a", "b", "c"), start=1):
        write_kohya_lora(folder / f"{name}.safetensors", pipe.unet, seed=seed, scale=0.2, unet_targets=FEW_LAYERS)
    write_kohya_lora(
        folder / "te.safetensors",
        pipe.unet,
        seed=9,
        scale=0.2,
        unet_targets=["attn2.to_k"],
        text_encoders=[pipe.text_encoder, pipe.text_encoder_2],
    )
    return folder


def path_in(folder: Path) -> Callable[[str], Path]:
    return lambda name: folder / name


def run_with(pipe, folder: Path, *specs: tuple[str, float], **kwargs: int) -> torch.Tensor:
    activate_loras(pipe, [LoraSpec(name, weight) for name, weight in specs], path_in(folder), **kwargs)
    return latents(pipe)


def unet_adapters(pipe) -> list[str]:
    return pipe.get_list_adapters().get("unet", [])


def all_adapters(pipe) -> set[str]:
    return {name for names in pipe.get_list_adapters().values() for name in names}


# -- weights and switching -----------------------------------------------------------------------
def test_weight_zero_and_no_loras_match_a_pipeline_that_never_saw_one(pipe, clean, loras: Path) -> None:
    assert matches_clean(run_with(pipe, loras, ("a.safetensors", 0.0)), clean)
    assert torch.equal(
        run_with(pipe, loras, ("a.safetensors", 1.0), ("b.safetensors", 0)),
        run_with(pipe, loras, ("a.safetensors", 1.0)),
    )
    assert matches_clean(run_with(pipe, loras, ("None", 1.0)), clean)
    assert matches_clean(run_with(pipe, loras), clean)
    # disabled adapters stay loaded, and a later task switches them back on
    assert any(name.startswith("a_") for name in unet_adapters(pipe))
    assert not matches_clean(run_with(pipe, loras, ("a.safetensors", 1.0)), clean)
    deactivate_loras(pipe)
    assert matches_clean(latents(pipe), clean)


def test_weights_and_combinations_change_the_output(pipe, clean, loras: Path) -> None:
    full = run_with(pipe, loras, ("a.safetensors", 1.0))
    half = run_with(pipe, loras, ("a.safetensors", 0.5))
    negative = run_with(pipe, loras, ("a.safetensors", -1.0))
    b_only = run_with(pipe, loras, ("b.safetensors", 1.0))
    both = run_with(pipe, loras, ("a.safetensors", 1.0), ("b.safetensors", 1.0))
    results = [clean["latents"], full, half, negative, b_only, both]
    assert all(torch.isfinite(result).all() for result in results)
    for i, first in enumerate(results):
        for second in results[i + 1 :]:
            assert not torch.equal(first, second)


def test_the_same_file_twice_sums_its_weights(pipe, loras: Path) -> None:
    assert merge_loras([LoraSpec("a", 0.25), LoraSpec("b", 0.0), LoraSpec("a", 0.75), LoraSpec("c", 0.5)]) == {
        "a": 1.0,
        "c": 0.5,
    }
    assert merge_loras([LoraSpec("a", 0.5), LoraSpec("a", -0.5)]) == {}
    twice = run_with(pipe, loras, ("a.safetensors", 0.5), ("a.safetensors", 0.5))
    assert torch.equal(twice, run_with(pipe, loras, ("a.safetensors", 1.0)))


def test_switching_leaves_no_stale_weights(pipe, clean, loras: Path, demo_models: Path) -> None:
    fresh_a = run_with(new_pipe(demo_models), loras, ("a.safetensors", 0.8))
    fresh_b = run_with(new_pipe(demo_models), loras, ("b.safetensors", 1.0))
    assert torch.equal(run_with(pipe, loras, ("a.safetensors", 0.8)), fresh_a)
    assert torch.equal(run_with(pipe, loras, ("b.safetensors", 1.0)), fresh_b)
    assert matches_clean(run_with(pipe, loras), clean)
    assert torch.equal(run_with(pipe, loras, ("a.safetensors", 0.8)), fresh_a)
    assert torch.equal(run_with(pipe, loras, ("b.safetensors", 1.0)), fresh_b)


def test_text_encoder_lora_changes_the_prompt_encoding(pipe, clean, loras: Path) -> None:
    activate_loras(pipe, [LoraSpec("te.safetensors", 1.0)], path_in(loras))
    adapters = pipe.get_list_adapters()
    assert {component for component, names in adapters.items() if any(n.startswith("te_") for n in names)} == {
        "unet",
        "text_encoder",
        "text_encoder_2",
    }
    with_te = prompt_embeds(pipe)
    assert not torch.equal(with_te, clean["embeds"])
    activate_loras(pipe, [LoraSpec("a.safetensors", 1.0)], path_in(loras))  # a UNet-only LoRA
    assert torch.equal(prompt_embeds(pipe), clean["embeds"])
    activate_loras(pipe, [LoraSpec("te.safetensors", 1.0)], path_in(loras))
    assert torch.equal(prompt_embeds(pipe), with_te)
    deactivate_loras(pipe)
    assert torch.equal(prompt_embeds(pipe), clean["embeds"])


# -- refusals ------------------------------------------------------------------------------------
def _other_size_unet() -> torch.nn.Module:
    """The demo UNet's layout with wider text conditioning, as a LoRA for another base model sees it."""
    from diffusers import UNet2DConditionModel

    config = UNet2DConditionModel.load_config(TINY_CONFIG_DIR / "unet")
    with torch.device("meta"):
        return UNet2DConditionModel.from_config({**config, "cross_attention_dim": 96})


def test_a_lora_for_other_shapes_is_refused_and_leaves_the_pipeline_clean(pipe, clean, tmp_path: Path) -> None:
    write_kohya_lora(tmp_path / "other.safetensors", _other_size_unet(), seed=5, unet_targets=["attn2.to_k"])
    with pytest.raises(LoraUnsupported, match=r"'other\.safetensors' does not fit this model: .*attn2\.to_k") as info:
        activate_loras(pipe, [LoraSpec("other.safetensors", 1.0)], path_in(tmp_path))
    assert info.value.name == "other.safetensors"
    assert "[4, 96] in the file but [4, 80] here" in info.value.detail
    assert not any(name.startswith("other_") for name in all_adapters(pipe))
    assert matches_clean(latents(pipe), clean)


def test_a_text_encoder_that_does_not_fit_unloads_the_unet_part_too(pipe, clean, tmp_path: Path) -> None:
    # The UNet part loads first; the text encoder part then fails on its shapes.
    path = write_kohya_lora(
        tmp_path / "half.safetensors", pipe.unet, seed=6, unet_targets=["attn2.to_k"], text_encoders=[pipe.text_encoder]
    )
    state = dict(_read(path))
    for layer in range(3):  # real layer names with the wrong width
        key = f"lora_te1_text_model_encoder_layers_{layer}_self_attn_out_proj"
        state[f"{key}.lora_down.weight"] = torch.zeros(4, 16)
    save_file(state, path)
    with pytest.raises(LoraUnsupported, match="does not fit this model"):
        activate_loras(pipe, [LoraSpec("half.safetensors", 1.0)], path_in(tmp_path))
    assert not any(name.startswith("half_") for name in all_adapters(pipe))
    assert matches_clean(latents(pipe), clean)


def _read(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ({"model.diffusion_model.conv_in.weight": torch.zeros(4, 4)}, "is not a LoRA file"),
        (
            {
                "lora_unet_no_such_block_attn1_to_k.lora_down.weight": torch.zeros(4, 8),
                "lora_unet_no_such_block_attn1_to_k.lora_up.weight": torch.zeros(8, 4),
            },
            "does not fit this model: no keys matched",
        ),
        (  # diffusers-format keys for another model type: diffusers skips them silently
            {
                "transformer.blocks.0.attn.to_k.lora_A.weight": torch.zeros(4, 8),
                "transformer.blocks.0.attn.to_k.lora_B.weight": torch.zeros(8, 4),
            },
            "does not fit this model: no keys matched",
        ),
        (b"this is no safetensors file", "is not a readable .safetensors file"),
    ],
    ids=["no-lora-keys", "kohya-keys-match-nothing", "other-model-keys", "not-safetensors"],
)
def test_files_that_are_no_lora_for_this_model_are_refused(
    pipe, clean, tmp_path: Path, content: dict[str, torch.Tensor] | bytes, reason: str
) -> None:
    path = tmp_path / "odd.safetensors"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        save_file(content, path)
    with pytest.raises(LoraUnsupported, match=reason) as info:
        activate_loras(pipe, [LoraSpec("odd.safetensors", 1.0)], path_in(tmp_path))
    assert str(info.value).startswith("LoRA 'odd.safetensors' ")
    assert not any(name.startswith("odd_") for name in all_adapters(pipe))
    assert matches_clean(latents(pipe), clean)


def test_a_partly_matching_lora_loads_with_a_warning(pipe, tmp_path: Path) -> None:
    path = write_kohya_lora(tmp_path / "part.safetensors", pipe.unet, seed=7, unet_targets=["attn1.to_k"])
    state = dict(_read(path))
    state["lora_unet_no_such_block_to_k.lora_down.weight"] = torch.zeros(4, 8)
    state["lora_unet_no_such_block_to_k.lora_up.weight"] = torch.zeros(8, 4)
    save_file(state, path)
    with structlog.testing.capture_logs() as logs:
        activate_loras(pipe, [LoraSpec("part.safetensors", 1.0)], path_in(tmp_path))
    assert {"event": "lora.partial_match", "lora": "part.safetensors", "matched_layers": 17, "file_layers": 18} in [
        {key: entry[key] for key in ("event", "lora", "matched_layers", "file_layers") if key in entry}
        for entry in logs
    ]


def test_a_missing_file_propagates_and_disables_the_previous_task_loras(pipe, clean, loras: Path) -> None:
    activate_loras(pipe, [LoraSpec("a.safetensors", 1.0)], path_in(loras))

    def missing(name: str) -> Path:
        raise FileNotFoundError(name)

    with pytest.raises(FileNotFoundError):
        activate_loras(pipe, [LoraSpec("gone.safetensors", 1.0)], missing)
    assert matches_clean(latents(pipe), clean)


# -- the adapter cache ---------------------------------------------------------------------------
def test_least_recently_used_adapters_are_evicted(loras: Path, demo_models: Path) -> None:
    pipe = new_pipe(demo_models)

    def run(*names: str, max_cached: int = 2) -> torch.Tensor:
        return run_with(pipe, loras, *((f"{name}.safetensors", 1.0) for name in names), max_cached=max_cached)

    def cached() -> list[str]:
        return sorted(name.split("_")[0] for name in unet_adapters(pipe))

    first = {name: run(name) for name in "abc"}
    assert cached() == ["b", "c"]
    assert torch.equal(run("a"), first["a"])  # reloaded; b was the least recently used
    assert cached() == ["a", "c"]
    assert torch.equal(run("c"), first["c"])  # cached: c becomes the most recently used
    assert torch.equal(run("b"), first["b"])
    assert cached() == ["b", "c"]
    # One task may need more than fit: all of them load, the next task trims back.
    run("a", "b", "c")
    assert cached() == ["a", "b", "c"]
    assert torch.equal(run("b"), first["b"])
    assert len(cached()) == 2
    # The text-encoder halves go with their adapter.
    run("te", max_cached=1)
    run("a", max_cached=1)
    assert cached() == ["a"]
    assert all(not any(n.startswith("te_") for n in names) for names in pipe.get_list_adapters().values())


def test_a_replaced_file_is_reloaded(pipe, tmp_path: Path) -> None:
    path = write_kohya_lora(tmp_path / "swap.safetensors", pipe.unet, seed=11, scale=0.2, unet_targets=FEW_LAYERS)
    before = run_with(pipe, tmp_path, ("swap.safetensors", 1.0))
    stat = path.stat()
    write_kohya_lora(path, pipe.unet, seed=12, scale=0.2, unet_targets=FEW_LAYERS)  # same size: only the mtime tells
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    after = run_with(pipe, tmp_path, ("swap.safetensors", 1.0))
    assert not torch.equal(before, after)
    assert sum(name.startswith("swap_") for name in unet_adapters(pipe)) == 1


def test_awkward_file_names_make_valid_adapter_names(pipe, clean, tmp_path: Path) -> None:
    for name in ("My LoRA v1.0 (ß).safetensors", "3d-render.lora.safetensors", "lora.safetensors"):
        write_kohya_lora(tmp_path / name, pipe.unet, seed=13, scale=0.2, unet_targets=FEW_LAYERS)
        assert not matches_clean(run_with(pipe, tmp_path, (name, 1.0)), clean)
    assert all(name.isascii() and name.replace("_", "").isalnum() for name in unet_adapters(pipe))


# -- demo performance LoRAs ----------------------------------------------------------------------
def test_demo_performance_loras_load_and_change_the_output(pipe, clean, tmp_path: Path) -> None:
    assert len(DEMO_LORA_NAMES) == 3
    assert ensure_demo_lora(tmp_path, "juggernaut.safetensors") is None
    outputs = []
    for name in DEMO_LORA_NAMES:
        assert ensure_demo_lora(tmp_path, name) == tmp_path / name
        out = run_with(pipe, tmp_path, (name, 1.0))
        assert torch.isfinite(out).all()
        assert not matches_clean(out, clean)
        outputs.append(out)
    assert not torch.equal(outputs[0], outputs[1]) and not torch.equal(outputs[1], outputs[2])


def test_demo_loras_are_deterministic_kohya_files(tmp_path: Path) -> None:
    state = torch.random.get_rng_state()
    for name in DEMO_LORA_NAMES:
        first = ensure_demo_lora(tmp_path / "one", name)
        second = ensure_demo_lora(tmp_path / "two", name)
        assert first is not None and second is not None
        assert first.read_bytes() == second.read_bytes()
    assert torch.equal(torch.random.get_rng_state(), state)
    keys = set(_read(tmp_path / "one" / DEMO_LORA_NAMES[0]))
    stem = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_k"
    assert {f"{stem}.lora_down.weight", f"{stem}.lora_up.weight", f"{stem}.alpha"} <= keys
    assert all(key.startswith("lora_unet_") for key in keys)
    # An existing file (a user's real LoRA of that name) is never overwritten.
    existing = tmp_path / "one" / DEMO_LORA_NAMES[1]
    existing.write_bytes(b"user file")
    assert ensure_demo_lora(tmp_path / "one", DEMO_LORA_NAMES[1]) == existing
    assert existing.read_bytes() == b"user file"


def test_lora_spec_is_a_frozen_value() -> None:
    spec = LoraSpec("a.safetensors", 0.5)
    assert spec == LoraSpec("a.safetensors", 0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.weight = 1.0  # type: ignore[misc]
