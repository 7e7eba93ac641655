"""IP-Adapter plus with Fooocus's attention: the Resampler, the loader, the attn2 processor, the demo files.

Fixtures are built in code for the tiny demo UNet (17 attn2 layers, cross-attention 80), saved as
the real formats (fp16 `.bin` pickle, safetensors negative) and read by the real loaders
(image-prompts.md §7, IP-Adapter row).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fooocus_es.engine.demo.checkpoint import build_demo_models
from fooocus_es.engine.demo.ip_adapter_files import (
    DEMO_CLIP_FILE,
    DEMO_IP_FILES,
    DEMO_NEGATIVE_FILE,
    build_demo_ip_adapter,
    write_demo_ip_files,
)
from fooocus_es.engine.diffusion.ip_adapter import (
    FooocusIPAttnProcessor,
    IPAttention,
    IPTokens,
    LayerKV,
    Resampler,
    cross_attention_layers,
    load_ip_adapter,
    weighted_kv,
)
from fooocus_es.engine.models.clip_vision import clip_pixels, image_hidden_states, load_clip_vision

F32 = torch.float32


@pytest.fixture(scope="module")
def pristine():
    """The demo UNet; never installed on: tests take deep copies."""
    return build_demo_models()["unet"]


@pytest.fixture
def unet(pristine):
    return copy.deepcopy(pristine)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ip")
    write_demo_ip_files(root / "controlnet", root / "clip_vision")
    return root / "controlnet", root / "clip_vision"


@pytest.fixture(scope="module")
def adapter(files, pristine):
    controlnet, _ = files
    return load_ip_adapter(controlnet / DEMO_IP_FILES[0], controlnet / DEMO_NEGATIVE_FILE, pristine, "cpu", F32)


@pytest.fixture(scope="module")
def hidden(files) -> list[torch.Tensor]:
    """CLIP hidden states of two different images."""
    clip = load_clip_vision(files[1] / DEMO_CLIP_FILE, "cpu", F32)
    rng = np.random.default_rng(8)
    images = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(2)]
    return [image_hidden_states(clip, clip_pixels(image, "cpu", F32)) for image in images]


def unet_inputs(rows: int, seed: int = 5) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        "sample": torch.randn(rows, 4, 8, 8, generator=generator),
        "timestep": torch.tensor(700),
        "encoder_hidden_states": torch.randn(rows, 7, 80, generator=generator),
        "added_cond_kwargs": {
            "text_embeds": torch.randn(rows, 32, generator=generator),
            "time_ids": torch.tensor([[64, 64, 0, 0, 64, 64]] * rows, dtype=F32),
        },
    }


def run(unet, inputs: dict) -> torch.Tensor:
    with torch.inference_mode():
        return unet(**inputs, return_dict=False)[0]


def run_active(unet, inputs: dict, tokens: list[IPTokens], split: bool) -> torch.Tensor:
    attention = IPAttention.install(unet)
    with torch.inference_mode(), attention.active(tokens, split):
        return unet(**inputs, return_dict=False)[0]


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean() / b.abs().mean())


# -- Resampler and loader --------------------------------------------------------------------------
def test_resampler_equals_diffusers_image_projection(pristine, files) -> None:
    data = torch.load(files[0] / DEMO_IP_FILES[0], weights_only=True)
    ours = Resampler.from_state_dict(data["image_proj"]).float()
    theirs = pristine._convert_ip_adapter_image_proj_to_diffusers(data["image_proj"], low_cpu_mem_usage=False).float()
    assert type(theirs).__name__ == "IPAdapterPlusImageProjection"
    assert ours.dims.depth == 4 and ours.dims.heads == 2 and ours.dims.queries == 16 and ours.dims.output == 80
    features = torch.randn(2, 257, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        mine, reference = ours(features), theirs(features)
    assert mine.shape == (2, 16, 80)
    assert torch.allclose(mine, reference, atol=1e-5, rtol=0)


def test_layer_order_is_diffusers_attn2_order(pristine) -> None:
    names = [name for name, _ in cross_attention_layers(pristine)]
    assert len(names) == 17 and all(name.endswith("attn2") for name in names)
    first = [name.split(".")[0] for name in names]
    assert first == sorted(first, key=["down_blocks", "up_blocks", "mid_block"].index)  # down, up, mid
    assert names[-1].startswith("mid_block")


def test_loader_rejects_files_that_do_not_fit_the_unet(files, pristine, tmp_path: Path) -> None:
    controlnet, _ = files
    negative = controlnet / DEMO_NEGATIVE_FILE
    data = build_demo_ip_adapter(pristine, 32, 1)

    def rejected(payload, match: str, neg: Path = negative) -> None:
        path = tmp_path / "bad.bin"
        torch.save(payload, path)
        with pytest.raises(ValueError, match=match):
            load_ip_adapter(path, neg, pristine, "cpu", F32)

    fewer = {key: v for key, v in data["ip_adapter"].items() if not key.startswith("33.")}
    rejected({**data, "ip_adapter": fewer}, "16 attention layers, the UNet 17")
    wide = dict(data["ip_adapter"], **{"5.to_v_ip.weight": torch.zeros(128, 80)})
    rejected({**data, "ip_adapter": wide}, r"5\.to_v_ip\.weight is \(128, 80\)")
    rejected({"state_dict": {}}, "image_proj")
    narrow = {key: v for key, v in data["image_proj"].items() if not key.startswith("latents")}
    rejected({**data, "image_proj": narrow}, "latents")
    save_file({"data": torch.zeros(8, 80)}, str(tmp_path / "neg.safetensors"))
    rejected(data, "negative tokens", tmp_path / "neg.safetensors")


# -- attention -------------------------------------------------------------------------------------
def test_outside_active_the_unet_is_bit_equal(unet, adapter, hidden) -> None:
    inputs = unet_inputs(2)
    before = run(unet, inputs)
    attn1 = {name: p for name, p in unet.attn_processors.items() if "attn1" in name}
    attention = IPAttention.install(unet)
    assert IPAttention.install(unet) is attention
    processors = unet.attn_processors
    assert all(processors[name] is p for name, p in attn1.items())  # other layers untouched
    ours = [p for name, p in processors.items() if "attn2" in name]
    assert len(ours) == 17 and all(isinstance(p, FooocusIPAttnProcessor) for p in ours)
    assert torch.equal(run(unet, inputs), before)
    run_active(unet, inputs, [adapter.tokens(hidden[0], 0.6, 0.6)], split=True)
    assert torch.equal(run(unet, inputs), before)  # and again after an active call
    assert IPAttention.install(copy.deepcopy(unet)) is not attention


def test_inside_active_the_output_changes_and_weight_scales_it(unet, adapter, hidden) -> None:
    inputs = unet_inputs(2)
    plain = run(unet, inputs)
    outs = {w: run_active(unet, inputs, [adapter.tokens(hidden[0], w, 0.6)], split=True) for w in (0.0, 0.6, 2.0)}
    assert relative(outs[0.6], plain) > 0.01
    assert relative(outs[0.0], plain) > 0.01  # weight 0 is not a no-op: its tokens take softmax mass
    assert relative(outs[2.0], outs[0.0]) > relative(outs[0.6], outs[0.0]) > 1e-4
    two = run_active(unet, inputs, [adapter.tokens(hidden[0], 0.6, 0.6), adapter.tokens(hidden[1], 0.6, 0.6)], True)
    assert relative(two, outs[0.6]) > 1e-3  # several prompts all concatenate
    assert torch.equal(run_active(unet, inputs, [], split=True), plain)


def reference_attention(attn, x: torch.Tensor, text: torch.Tensor, extra_kv: list[tuple[torch.Tensor, torch.Tensor]]):
    """The brief's formula written out: text and image keys/values concatenated, one softmax per head."""
    with torch.no_grad():
        q, k, v = attn.to_q(x), attn.to_k(text), attn.to_v(text)
        k = torch.cat([k, *(ek for ek, _ in extra_kv)], dim=1)
        v = torch.cat([v, *(ev for _, ev in extra_kv)], dim=1)
        b, heads = x.shape[0], attn.heads
        split = [t.view(b, t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v)]
        scores = split[0] @ split[1].transpose(-1, -2) / split[0].shape[-1] ** 0.5
        out = (scores.softmax(dim=-1) @ split[2]).transpose(1, 2).reshape(b, x.shape[1], -1)
        return attn.to_out[1](attn.to_out[0](out))


def test_one_layer_matches_a_hand_written_reference(unet) -> None:
    name, attn = cross_attention_layers(unet)[3]
    channels = attn.inner_dim
    g = torch.Generator().manual_seed(2)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    prompts = [
        IPTokens(weight, 0.6, tuple(LayerKV(*(rand(1, 16, channels) for _ in range(4))) for _ in range(17)))
        for weight in (0.7, 0.3)
    ]
    b = 2  # rows [uncond x 2; cond x 2]
    x, text = rand(2 * b, 9, channels), rand(2 * b, 5, 80)
    attention = IPAttention.install(unet)
    with torch.no_grad(), attention.active(prompts, split=True):
        got = attn(x, encoder_hidden_states=text)

    def by_hand(p: IPTokens, cond: bool) -> tuple[torch.Tensor, torch.Tensor]:
        kv = p.layers[3]
        k, v = (kv.cond_k, kv.cond_v) if cond else (kv.uncond_k, kv.uncond_v)
        w = p.weight * channels / 1280
        return k * w, (v - v.mean(dim=1, keepdim=True)) + v.mean(dim=1, keepdim=True) * w

    for row in range(2 * b):
        cond = row >= b
        extra = [tuple(t.expand(1, -1, -1) for t in by_hand(p, cond)) for p in prompts]
        want = reference_attention(attn, x[row : row + 1], text[row : row + 1], extra)
        assert torch.allclose(got[row : row + 1], want, atol=1e-5), (name, row)
    k, v = prompts[0].layers[3].cond_k, prompts[0].layers[3].cond_v
    wk, wv = weighted_kv(k, v, 0.0)
    assert torch.count_nonzero(wk) == 0 and torch.allclose(wv.mean(dim=1), torch.zeros(channels), atol=1e-6)


def test_split_rows_uncond_sees_only_the_negative_tokens(unet, adapter, hidden) -> None:
    b = 2
    inputs = unet_inputs(2 * b)
    first = run_active(unet, inputs, [adapter.tokens(hidden[0], 0.6, 0.6)], split=True)
    second = run_active(unet, inputs, [adapter.tokens(hidden[1], 0.6, 0.6)], split=True)
    assert torch.equal(first[:b], second[:b])  # uncond rows: the same negative tokens whatever the image
    assert relative(first[b:], second[b:]) > 1e-4  # cond rows: the image
    plain = run(unet, inputs)
    assert relative(first[:b], plain[:b]) > 1e-3  # the negative tokens act on the uncond rows

    cond_only = {**inputs, "sample": inputs["sample"][b:], "encoder_hidden_states": inputs["encoder_hidden_states"][b:],
                 "added_cond_kwargs": {k: v[b:] for k, v in inputs["added_cond_kwargs"].items()}}  # fmt: skip
    cfg1 = run_active(unet, cond_only, [adapter.tokens(hidden[0], 0.6, 0.6)], split=False)
    assert torch.allclose(cfg1, first[b:], atol=1e-5)  # split=False: every row is cond
    with pytest.raises(ValueError, match="even batch"):
        run_active(unet, unet_inputs(3), [adapter.tokens(hidden[0], 0.6, 0.6)], split=True)


def test_works_on_a_unet_with_a_peft_lora_adapter(unet, files, hidden) -> None:
    from peft import LoraConfig

    unet.add_adapter(LoraConfig(r=4, init_lora_weights=False, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    controlnet, _ = files
    adapter = load_ip_adapter(controlnet / DEMO_IP_FILES[1], controlnet / DEMO_NEGATIVE_FILE, unet, "cpu", F32)
    inputs = unet_inputs(2)
    before = run(unet, inputs)
    attention = IPAttention.install(unet)
    assert torch.equal(run(unet, inputs), before)
    active = run_active(unet, inputs, [adapter.tokens(hidden[0], 0.6, 0.6)], split=True)
    assert relative(active, before) > 0.01
    assert IPAttention.install(unet) is attention


def test_tokens_are_computed_once_per_image(adapter, hidden) -> None:
    tokens = adapter.tokens(hidden[0], 0.6, 0.4)
    assert (tokens.weight, tokens.stop, len(tokens.layers)) == (0.6, 0.4, 17)
    assert tokens.layers[0].cond_k.shape == (1, 16, 64)
    assert tokens.layers[5].uncond_k is adapter.uncond[5][0]  # the negative's k/v are precomputed
    with pytest.raises(ValueError, match="one image"):
        adapter.tokens(torch.cat(hidden), 0.6, 0.6)


# -- demo files ------------------------------------------------------------------------------------
def test_demo_files_write_once_load_and_leave_the_rng_alone(tmp_path: Path, pristine, hidden) -> None:
    controlnet, clip_dir = tmp_path / "controlnet", tmp_path / "clip_vision"
    state = torch.get_rng_state()
    write_demo_ip_files(controlnet, clip_dir)
    assert torch.equal(torch.get_rng_state(), state)
    paths = [clip_dir / DEMO_CLIP_FILE, *(controlnet / name for name in (*DEMO_IP_FILES, DEMO_NEGATIVE_FILE))]
    stamps = [path.stat().st_mtime_ns for path in paths]
    contents = [path.read_bytes() for path in paths]
    write_demo_ip_files(controlnet, clip_dir)
    assert [path.stat().st_mtime_ns for path in paths] == stamps
    assert not list(tmp_path.rglob("*.tmp"))

    paths[1].unlink()
    write_demo_ip_files(controlnet, clip_dir)  # only the missing one is written, the same bytes again
    assert [path.read_bytes() for path in paths] == contents

    raw = torch.load(paths[1], weights_only=True)
    assert raw["ip_adapter"]["1.to_k_ip.weight"].dtype == torch.float16
    other = torch.load(paths[2], weights_only=True)
    assert not torch.equal(raw["ip_adapter"]["1.to_k_ip.weight"], other["ip_adapter"]["1.to_k_ip.weight"])

    clip = load_clip_vision(paths[0], "cpu", F32)
    assert clip.config.hidden_size == 32 and clip.config.num_attention_heads == 4
    unet = copy.deepcopy(pristine)
    for name in DEMO_IP_FILES:
        adapter = load_ip_adapter(controlnet / name, paths[3], unet, "cpu", F32)
        inputs = unet_inputs(2)
        assert relative(run_active(unet, inputs, [adapter.tokens(hidden[0], 0.6, 0.6)], True), run(unet, inputs)) > 0.03
