"""Fooocus-style prompt encoding on the tiny demo SDXL (clip_l 32 + clip_g 48 features, 3 layers each)."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from diffusers import StableDiffusionXLPipeline

from fooocus_es.engine.diffusion.text_encoding import (
    CHUNK_LENGTH,
    Conditioning,
    chunk_tokens,
    clip_encoders,
    encode_conditioning,
    encode_parts,
    encode_text,
    match_lengths,
    tokenize_words,
)
from fooocus_es.engine.models.store import ModelStore
from fooocus_es.engine.planning.demo_names import DEMO_CHECKPOINT

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:__array_wrap__ must accept:DeprecationWarning"),
]

L_DIM = 32  # the demo clip_l's width: embeds[..., :L_DIM] are clip_l's, the rest clip_g's
BOS, EOS = 49406, 49407


@pytest.fixture(scope="module")
def pipe(demo_models: Path) -> StableDiffusionXLPipeline:
    torch.set_num_threads(1)
    return ModelStore(demo_models).load_pipeline(DEMO_CHECKPOINT)


def words(n: int, last: str = "cat") -> str:
    """n one-token words (the demo tokenizers are the real CLIP BPE)."""
    return " ".join(["dog"] * (n - 1) + [last])


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to the rounding that a different batch size in the encoder's matmuls may bring."""
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)


def diffusers_encode(pipe: StableDiffusionXLPipeline, prompt: str, negative: str, clip_skip: int | None = None):
    return pipe.encode_prompt(
        prompt,
        prompt_2=None,
        device="cpu",
        num_images_per_prompt=1,
        do_classifier_free_guidance=True,
        negative_prompt=negative,
        clip_skip=clip_skip,
    )


# --- layout -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("clip_skip", "diffusers_clip_skip"), [(2, None), (3, 1)])
def test_plain_prompt_matches_diffusers(
    pipe: StableDiffusionXLPipeline, clip_skip: int, diffusers_clip_skip: int | None
) -> None:
    positive, negative = "a photo of a cat, sitting", "blurry, ugly"
    embeds, _, pooled, negative_pooled = diffusers_encode(pipe, positive, negative, diffusers_clip_skip)
    # diffusers applies clip_skip to the positive only; Fooocus to both, so encode the negative as a prompt
    negative_embeds = diffusers_encode(pipe, negative, "", diffusers_clip_skip)[0]
    cond = encode_conditioning(pipe, [positive], [negative], clip_skip)
    assert cond.prompt_embeds.shape == cond.negative_prompt_embeds.shape == (1, 77, 80)
    assert cond.pooled_prompt_embeds.shape == cond.negative_pooled_prompt_embeds.shape == (1, 32)
    assert torch.equal(cond.prompt_embeds, embeds)
    assert torch.equal(cond.pooled_prompt_embeds, pooled)
    assert torch.equal(cond.negative_prompt_embeds, negative_embeds)
    assert torch.equal(cond.negative_pooled_prompt_embeds, negative_pooled)


def test_clip_skip_1_is_last_hidden_state_without_final_norm(pipe: StableDiffusionXLPipeline) -> None:
    ids = torch.tensor([pipe.tokenizer("a cat", padding="max_length", max_length=77)["input_ids"]])
    with torch.no_grad():
        out = pipe.text_encoder(ids, output_hidden_states=True)
    embeds, _ = encode_text(pipe, "a cat", clip_skip=1)
    assert torch.equal(embeds[..., :L_DIM], out.hidden_states[-1])
    assert not torch.allclose(embeds[..., :L_DIM], out.last_hidden_state)


def test_clip_skip_past_encoder_depth_falls_back_to_last_layer_like_comfyui(pipe: StableDiffusionXLPipeline) -> None:
    ids = torch.tensor([pipe.tokenizer("a cat", padding="max_length", max_length=77)["input_ids"]])
    with torch.no_grad():
        last = pipe.text_encoder(ids).last_hidden_state
    embeds, _ = encode_text(pipe, "a cat", clip_skip=4)  # the demo encoders have 3 layers
    assert torch.equal(embeds[..., :L_DIM], last)


@pytest.mark.parametrize("clip_skip", [0, -1, 13, True, 2.0])
def test_clip_skip_out_of_range_is_rejected(pipe: StableDiffusionXLPipeline, clip_skip: object) -> None:
    with pytest.raises(ValueError, match="clip_skip must be an integer from 1 to 12"):
        encode_conditioning(pipe, ["cat"], [""], clip_skip)  # type: ignore[arg-type]


def test_chunks_pad_with_each_tokenizers_own_pad_token(pipe: StableDiffusionXLPipeline) -> None:
    clip_l, clip_g = clip_encoders(pipe)
    assert (clip_l.start, clip_l.end, clip_l.pad) == (BOS, EOS, EOS)
    assert (clip_g.start, clip_g.end, clip_g.pad) == (BOS, EOS, 0)
    ids = [t for t, _ in chunk_tokens(tokenize_words(clip_g.tokenizer, "a cat"), clip_g.start, clip_g.end, 0)[0]]
    assert ids == pipe.tokenizer_2("a cat", padding="max_length", max_length=77)["input_ids"]


def test_chunking_keeps_short_words_together_and_splits_long_ones() -> None:
    filler = [[(1, 1.0)]] * 74  # BOS + 74 tokens: one place left before the EOS
    short = [(2, 1.5), (3, 1.5)]
    chunks = chunk_tokens([*filler, short], BOS, EOS, 0)
    assert [len(c) for c in chunks] == [77, 77]
    assert chunks[0][-2:] == [(EOS, 1.0), (0, 1.0)]  # closed early, the word moved whole
    assert chunks[1][:4] == [(BOS, 1.0), (2, 1.5), (3, 1.5), (EOS, 1.0)]

    long = [(5, 1.0)] * 8  # MAX_WORD_LENGTH tokens: split across the border instead
    chunks = chunk_tokens([*filler, long], BOS, EOS, 0)
    assert chunks[0][-2:] == [(5, 1.0), (EOS, 1.0)]
    assert [t for t, _ in chunks[1][:9]] == [BOS] + [5] * 7 + [EOS]

    assert chunk_tokens([], BOS, EOS, 0) == [[(BOS, 1.0), (EOS, 1.0)] + [(0, 1.0)] * 75]
    exact = chunk_tokens([[(1, 1.0)]] * 75, BOS, EOS, 0)
    assert len(exact) == 1 and exact[0][-1] == (EOS, 1.0)


def test_words_are_tokenized_with_their_segment_weight(pipe: StableDiffusionXLPipeline) -> None:
    groups = tokenize_words(pipe.tokenizer, "a (black cat:1.5)\nsat")
    assert [[w for _, w in g] for g in groups] == [[1.0], [1.5], [1.5], [1.0]]
    assert [t for g in groups for t, _ in g] == pipe.tokenizer("a black cat sat", add_special_tokens=False)["input_ids"]


# --- long prompts -------------------------------------------------------------------------------


def test_long_prompt_is_chunked_not_truncated(pipe: StableDiffusionXLPipeline) -> None:
    embeds, pooled = encode_text(pipe, words(200))
    assert embeds.shape == (1, 3 * CHUNK_LENGTH, 80)  # 75 + 75 + 50 tokens
    other, other_pooled = encode_text(pipe, words(200, last="house"))
    assert torch.equal(embeds[:, :154], other[:, :154])  # only the third chunk holds the tail
    assert not torch.allclose(embeds[:, 154:], other[:, 154:])
    assert torch.equal(pooled, other_pooled)  # the pooled output is the first chunk's
    first, first_pooled = encode_text(pipe, words(75, last="dog"))
    close(embeds[:, :77], first)  # batched with the other chunks: equal up to float rounding
    close(pooled, first_pooled)


# --- emphasis -----------------------------------------------------------------------------------


def test_weight_one_is_exactly_the_plain_encoding(pipe: StableDiffusionXLPipeline) -> None:
    plain = encode_text(pipe, "a photo of a cat")
    for text in ("a photo of a (cat:1.0)", "a photo of a ((cat:1))", "(a photo of a cat:1)"):
        got = encode_text(pipe, text)
        assert torch.equal(got[0], plain[0]) and torch.equal(got[1], plain[1])


def test_emphasis_lerps_only_the_weighted_token_from_the_empty_prompt(pipe: StableDiffusionXLPipeline) -> None:
    plain, plain_pooled = encode_text(pipe, "a photo of a cat")
    empty, _ = encode_text(pipe, "")
    weighted, pooled = encode_text(pipe, "a photo of a (cat:1.5)", restore_mean=False)
    cat = 5  # BOS a photo of a cat
    others = [i for i in range(77) if i != cat]
    close(weighted[:, others], plain[:, others])
    torch.testing.assert_close(weighted[:, cat], (plain[:, cat] - empty[:, cat]) * 1.5 + empty[:, cat])
    assert (weighted[:, cat] - plain[:, cat]).abs().max() > 1e-3
    close(pooled, plain_pooled)  # emphasis never touches the pooled output


def test_fooocus_restores_each_encoders_mean_after_emphasis(pipe: StableDiffusionXLPipeline) -> None:
    plain, _ = encode_text(pipe, "a photo of a cat")
    lerped, _ = encode_text(pipe, "a photo of a (cat:1.5)", restore_mean=False)
    restored, _ = encode_text(pipe, "a photo of a (cat:1.5)")
    for features in (slice(0, L_DIM), slice(L_DIM, None)):
        torch.testing.assert_close(restored[..., features].mean(), plain[..., features].mean())
        factor = plain[..., features].mean() / lerped[..., features].mean()
        torch.testing.assert_close(restored[..., features], lerped[..., features] * factor)
    assert not torch.allclose(restored, lerped)


def test_emphasis_applies_in_every_chunk(pipe: StableDiffusionXLPipeline) -> None:
    plain, _ = encode_text(pipe, words(100))
    weighted, _ = encode_text(pipe, words(99, last="dog") + " (cat:1.4)", restore_mean=False)
    cat = 77 + 1 + 24  # chunk 2: BOS + 24 dogs, then cat
    rows = [i for i in range(154) if i != cat]
    close(weighted[:, rows], plain[:, rows])
    assert not torch.allclose(weighted[:, cat], plain[:, cat])


# --- parts and positive/negative ----------------------------------------------------------------


def test_parts_are_encoded_alone_concatenated_and_pooled_summed(pipe: StableDiffusionXLPipeline) -> None:
    a, a_pooled = encode_text(pipe, "a photo of a cat")
    b, b_pooled = encode_text(pipe, words(90))
    embeds, pooled = encode_parts(pipe, ["a photo of a cat", words(90)])
    assert torch.equal(embeds, torch.cat([a, b], dim=1)) and embeds.shape[1] == 3 * CHUNK_LENGTH
    torch.testing.assert_close(pooled, a_pooled + b_pooled)
    _, top_1 = encode_parts(pipe, ["a photo of a cat", words(90)], pool_top_k=1)
    assert torch.equal(top_1, a_pooled)  # Fooocus leaves the expansion's pooled output out this way


def test_no_parts_encode_the_empty_prompt(pipe: StableDiffusionXLPipeline) -> None:
    empty, empty_pooled = encode_text(pipe, "")
    embeds, pooled = encode_parts(pipe, [])
    assert torch.equal(embeds, empty) and torch.equal(pooled, empty_pooled)
    cond = encode_conditioning(pipe, ["cat"], [])
    assert torch.equal(cond.negative_prompt_embeds, empty)


def test_positive_and_negative_are_tiled_to_the_lcm_of_their_lengths(pipe: StableDiffusionXLPipeline) -> None:
    positive, _ = encode_parts(pipe, [words(100)])  # 2 chunks
    negative, _ = encode_parts(pipe, [words(200)])  # 3 chunks
    cond = encode_conditioning(pipe, [words(100)], [words(200)])
    assert cond.prompt_embeds.shape == cond.negative_prompt_embeds.shape == (1, 6 * CHUNK_LENGTH, 80)
    assert torch.equal(cond.prompt_embeds, torch.cat([positive] * 3, dim=1))
    assert torch.equal(cond.negative_prompt_embeds, torch.cat([negative] * 2, dim=1))
    a, b = match_lengths(positive[:, :77], negative)
    assert a.shape[1] == b.shape[1] == 231 and torch.equal(b, negative)


# --- other pipelines ----------------------------------------------------------------------------


def test_refiner_layout_encodes_clip_g_only(pipe: StableDiffusionXLPipeline) -> None:
    refiner = SimpleNamespace(
        tokenizer=None, text_encoder=None, tokenizer_2=pipe.tokenizer_2, text_encoder_2=pipe.text_encoder_2
    )
    base, base_pooled = encode_text(pipe, "a (photo:1.3) of a cat")
    embeds, pooled = encode_text(refiner, "a (photo:1.3) of a cat")
    assert embeds.shape == (1, 77, 48)
    assert torch.equal(embeds, base[..., L_DIM:]) and torch.equal(pooled, base_pooled)


def test_text_encoder_lora_layers_are_used(pipe: StableDiffusionXLPipeline) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    lora_pipe = SimpleNamespace(
        tokenizer=pipe.tokenizer,
        text_encoder=copy.deepcopy(pipe.text_encoder),
        tokenizer_2=pipe.tokenizer_2,
        text_encoder_2=pipe.text_encoder_2,
    )
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    inject_adapter_in_model(config, lora_pipe.text_encoder)
    base, _ = encode_text(pipe, "a cat")
    with_lora, _ = encode_text(lora_pipe, "a cat")
    assert torch.equal(with_lora[..., L_DIM:], base[..., L_DIM:])
    assert not torch.allclose(with_lora[..., :L_DIM], base[..., :L_DIM])


def test_conditioning_drives_the_pipeline_deterministically(pipe: StableDiffusionXLPipeline) -> None:
    cond = encode_conditioning(pipe, ["a (cat:1.2)", words(80)], ["blurry"])
    assert isinstance(cond, Conditioning)

    def generate() -> torch.Tensor:
        return pipe(
            prompt_embeds=cond.prompt_embeds,
            pooled_prompt_embeds=cond.pooled_prompt_embeds,
            negative_prompt_embeds=cond.negative_prompt_embeds,
            negative_pooled_prompt_embeds=cond.negative_pooled_prompt_embeds,
            output_type="latent",
            num_inference_steps=2,
            width=64,
            height=64,
            generator=torch.Generator().manual_seed(1),
        ).images

    first = generate()
    assert first.shape == (1, 4, 8, 8) and torch.isfinite(first).all()
    assert torch.equal(first, generate())
