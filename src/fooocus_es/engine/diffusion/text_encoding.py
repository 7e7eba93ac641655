"""Fooocus's SDXL prompt encoding on diffusers' text encoders, for `prompt_embeds=` and friends.

Fooocus (ComfyUI's `ldm_patched`, patched by Fooocus's `patch_clip.py`) differs from diffusers'
`encode_prompt` in ways that change images:

* emphasis `(word:1.2)` (see `emphasis.py`), applied by lerping each token's features away from
  those of an empty prompt, then (Fooocus's patch) rescaling the chunk to its unweighted mean;
* prompts longer than 75 tokens are split into 77-token chunks (BOS + 75 + EOS/padding) that are
  encoded separately and concatenated, instead of being truncated;
* `clip_skip` picks `hidden_states[-clip_skip]` of both encoders, without the final layer norm;
* each prompt part (styles, extra lines, expansion) is encoded on its own; the conds are
  concatenated and the pooled outputs of the first `pool_top_k` parts summed (`clip_encode`);
* the positive and negative conds are tiled to the least common multiple of their lengths, as
  ComfyUI's `cond_cat` does before batching them (repeating keys does not change attention).

Works for the base model (clip_l ++ clip_g, 768 + 1280 features) and for the refiner layout, whose
pipeline has no `text_encoder`/`tokenizer` (clip_g only). Text-encoder LoRAs keep working: the
modules are simply called.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import torch
from diffusers.utils.torch_utils import get_module_execution_device

from fooocus_es.engine.planning.emphasis import parse_emphasis

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

CHUNK_LENGTH: Final = 77  # CLIP's context: BOS + 75 tokens + EOS
MAX_CLIP_SKIP: Final = 12  # Fooocus's UI range
# ComfyUI moves a word shorter than this whole to the next chunk rather than splitting it.
MAX_WORD_LENGTH: Final = 8

Token = tuple[int, float]  # (token id, emphasis weight)


@dataclass(frozen=True)
class Conditioning:
    """What `StableDiffusionXLPipeline.__call__` takes instead of prompt text."""

    prompt_embeds: torch.Tensor  # (1, 77*k, 2048) for SDXL base (clip_l 768 ++ clip_g 1280)
    pooled_prompt_embeds: torch.Tensor  # (1, 1280)
    negative_prompt_embeds: torch.Tensor  # same shape as prompt_embeds
    negative_pooled_prompt_embeds: torch.Tensor


@dataclass(frozen=True)
class ClipEncoder:
    """One of the pipeline's CLIP text encoders with its tokenizer and special token ids."""

    tokenizer: PreTrainedTokenizerBase
    model: PreTrainedModel
    start: int
    end: int
    pad: int  # clip_l pads with EOS, clip_g with "!" (id 0): each tokenizer carries its own


def clip_encoders(pipe: Any) -> list[ClipEncoder]:
    """The pipeline's encoders in feature order (clip_l first); the last one gives the pooled output."""
    clip_l = (getattr(pipe, "tokenizer", None), getattr(pipe, "text_encoder", None))
    clip_g = (getattr(pipe, "tokenizer_2", None), getattr(pipe, "text_encoder_2", None))
    if None in clip_g:
        raise ValueError("an SDXL pipeline with text_encoder_2 and tokenizer_2 is needed (they give the pooled output)")
    present = [clip_l, clip_g] if None not in clip_l else [clip_g]  # the refiner has clip_g only
    return [_clip_encoder(tok, model) for tok, model in present]


def _clip_encoder(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> ClipEncoder:
    start, end = tokenizer("")["input_ids"]  # as ComfyUI reads them: the ids around an empty text
    pad = tokenizer.pad_token_id
    return ClipEncoder(tokenizer, model, start, end, end if pad is None else pad)


def check_clip_skip(clip_skip: int) -> None:
    if isinstance(clip_skip, bool) or not isinstance(clip_skip, int) or not 1 <= clip_skip <= MAX_CLIP_SKIP:
        raise ValueError(f"clip_skip must be an integer from 1 to {MAX_CLIP_SKIP}, got {clip_skip!r}")


# --- tokenization -------------------------------------------------------------------------------


def tokenize_words(tokenizer: PreTrainedTokenizerBase, text: str) -> list[list[Token]]:
    """The text's words as weighted token groups, without BOS/EOS (ComfyUI `tokenize_with_weights`).

    Each emphasis segment is split on spaces and each word tokenized on its own, so a chunk border
    can keep a word's tokens together.
    """
    words: list[tuple[str, float]] = []
    for segment, weight in parse_emphasis(text):
        words += [(word, weight) for word in segment.replace("\n", " ").split(" ") if word]
    if not words:
        return []
    ids = tokenizer([word for word, _ in words])["input_ids"]
    return [[(token, weight) for token in word_ids[1:-1]] for word_ids, (_, weight) in zip(ids, words, strict=True)]


def chunk_tokens(
    groups: Sequence[Sequence[Token]], start: int, end: int, pad: int, length: int = CHUNK_LENGTH
) -> list[list[Token]]:
    """Weighted token groups laid out in `length`-token chunks: BOS + tokens + EOS + padding.

    As ComfyUI: a word that does not fit moves whole to the next chunk (the current one is closed
    with EOS and padding); a word of MAX_WORD_LENGTH tokens or more is split across chunks instead.
    No text still gives one chunk.
    """
    chunk: list[Token] = [(start, 1.0)]
    chunks = [chunk]
    for group in groups:
        rest = list(group)
        is_large = len(rest) >= MAX_WORD_LENGTH
        while rest:
            room = length - 1 - len(chunk)  # places left before the EOS
            if len(rest) <= room:
                chunk.extend(rest)
                break
            if is_large:
                chunk.extend(rest[:room])
                rest = rest[room:]
                chunk.append((end, 1.0))
            else:
                chunk.append((end, 1.0))
                chunk.extend([(pad, 1.0)] * room)
            chunk = [(start, 1.0)]
            chunks.append(chunk)
    chunk.append((end, 1.0))
    chunk.extend([(pad, 1.0)] * (length - len(chunk)))
    return chunks


def empty_chunk(encoder: ClipEncoder, length: int = CHUNK_LENGTH) -> list[int]:
    """The empty prompt's ids, the reference point of emphasis (ComfyUI `gen_empty_tokens`)."""
    return [encoder.start, encoder.end] + [encoder.pad] * (length - 2)


# --- encoding -----------------------------------------------------------------------------------


def _run_encoder(
    encoder: ClipEncoder, ids: list[list[int]], clip_skip: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Features (batch, 77, dim) at the clip_skip layer and the projected pooled output, if any."""
    model = encoder.model
    # The hook's device under CPU offloading, where the weights' own device is the CPU or meta.
    input_ids = torch.tensor(ids, dtype=torch.long, device=get_module_execution_device(model))
    out = model(input_ids=input_ids, output_hidden_states=True)
    # Past the encoder's depth ComfyUI falls back to the last layer WITH the final norm (only
    # reachable with tiny test models: SDXL's encoders have 12 and 32 layers, clip_skip <= 12).
    beyond_depth = clip_skip > model.config.num_hidden_layers
    hidden = out.last_hidden_state if beyond_depth else out.hidden_states[-clip_skip]
    return hidden, getattr(out, "text_embeds", None)


def _encode_chunks(
    encoder: ClipEncoder, chunks: list[list[Token]], clip_skip: int, restore_mean: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(chunks, 77, dim) float32 features with emphasis applied, and chunk 0's pooled output."""
    ids = [[token for token, _ in chunk] for chunk in chunks]
    weights = torch.tensor([[w for _, w in chunk] for chunk in chunks], dtype=torch.float32)
    weighted = bool((weights != 1.0).any())
    if weighted:
        ids.append(empty_chunk(encoder))  # same batch, as ComfyUI
    hidden, pooled = _run_encoder(encoder, ids, clip_skip)
    z = hidden.float()
    first_pooled = None if pooled is None else pooled[:1]
    if not weighted:
        return z, first_pooled
    return _apply_emphasis(z[:-1], z[-1], weights.to(z.device), restore_mean), first_pooled


def _apply_emphasis(z: torch.Tensor, z_empty: torch.Tensor, weights: torch.Tensor, restore_mean: bool) -> torch.Tensor:
    """ComfyUI's lerp from the empty prompt, `(z - z_empty) * w + z_empty`, on tokens whose w != 1.

    With `restore_mean` (Fooocus's `encode_token_weights_fooocus`) each chunk is then scaled back
    to the mean it had unweighted, so emphasis does not shift the conditioning's overall level.
    """
    w = weights.unsqueeze(-1)
    out = torch.where(w != 1.0, (z - z_empty) * w + z_empty, z)
    if restore_mean:
        out = out * (z.mean(dim=(1, 2), keepdim=True) / out.mean(dim=(1, 2), keepdim=True))
    return out


def encode_text(
    pipe: Any, text: str, clip_skip: int = 2, *, restore_mean: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """One prompt part: embeds (1, 77*chunks, features) and pooled (1, pooled dim), in text_encoder_2's dtype.

    Fooocus's `clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)`.
    """
    check_clip_skip(clip_skip)
    encoders = clip_encoders(pipe)
    features: list[torch.Tensor] = []
    pooled: torch.Tensor | None = None
    with torch.no_grad():
        for encoder in encoders:
            chunks = chunk_tokens(tokenize_words(encoder.tokenizer, text), encoder.start, encoder.end, encoder.pad)
            z, pooled = _encode_chunks(encoder, chunks, clip_skip, restore_mean)
            features.append(z)
    if len({z.shape[0] for z in features}) != 1:
        raise ValueError(f"the text encoders' tokenizers split {text!r} into different numbers of chunks")
    if pooled is None:
        raise ValueError("text_encoder_2 gives no projected pooled output: a CLIPTextModelWithProjection is needed")
    dtype = pipe.text_encoder_2.dtype
    embeds = torch.cat([z.to(features[-1].device) for z in features], dim=-1)
    return embeds.reshape(1, -1, embeds.shape[-1]).to(dtype), pooled.to(dtype)


def encode_parts(
    pipe: Any,
    parts: Sequence[str],
    clip_skip: int = 2,
    *,
    pool_top_k: int | None = None,
    restore_mean: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fooocus's `clip_encode(texts, pool_top_k)`: parts encoded alone, conds concatenated along the
    sequence, pooled outputs of the first `pool_top_k` parts (all by default) summed.

    Fooocus passes the number of parts before its prompt expansion is appended, so the expansion's
    pooled output is left out. No parts encode "" once.
    """
    texts = list(parts) or [""]
    top_k = len(texts) if pool_top_k is None else pool_top_k
    encoded = [encode_text(pipe, text, clip_skip, restore_mean=restore_mean) for text in texts]
    pooled = [p.float() for _, p in encoded[: max(top_k, 0)]]
    first = encoded[0][1]
    pooled_sum = torch.stack(pooled).sum(dim=0).to(first.dtype) if pooled else torch.zeros_like(first)
    return torch.cat([embeds for embeds, _ in encoded], dim=1), pooled_sum


def match_lengths(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both conds tiled along the sequence to the lcm of their lengths (ComfyUI `cond_cat`).

    The whole sequence repeats ([A B] -> [A B A B A B]); attention over a repeated key set gives
    the same result, so this only makes the two batchable for classifier-free guidance.
    """
    length = math.lcm(a.shape[1], b.shape[1])
    return a.repeat(1, length // a.shape[1], 1), b.repeat(1, length // b.shape[1], 1)


def encode_conditioning(
    pipe: Any,
    positive_parts: Sequence[str],
    negative_parts: Sequence[str],
    clip_skip: int = 2,
    *,
    positive_pool_top_k: int | None = None,
    negative_pool_top_k: int | None = None,
    restore_mean: bool = True,
) -> Conditioning:
    """Positive and negative prompt parts encoded the Fooocus way, ready for the SDXL pipeline."""
    check_clip_skip(clip_skip)
    positive, positive_pooled = encode_parts(
        pipe, positive_parts, clip_skip, pool_top_k=positive_pool_top_k, restore_mean=restore_mean
    )
    negative, negative_pooled = encode_parts(
        pipe, negative_parts, clip_skip, pool_top_k=negative_pool_top_k, restore_mean=restore_mean
    )
    positive, negative = match_lengths(positive, negative)
    return Conditioning(positive, positive_pooled, negative, negative_pooled)
