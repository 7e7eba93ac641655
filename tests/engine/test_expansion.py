"""Fooocus V2 prompt expansion (engine/models/expansion.py) on the generated demo GPT-2, and its wiring:
planning keeps the V2 note without an installed folder, the engine appends the expansion as the last
positive part (outside the pooled output), per image seed, on the single and the batched path.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from engine_helpers import Hooks

from fooocus_es.engine.demo.expansion_files import DEMO_POSITIVE_WORDS, write_demo_expansion
from fooocus_es.engine.diffusion.pipeline import Engine
from fooocus_es.engine.diffusion.sampling import ConditioningCache
from fooocus_es.engine.models.expansion import BANNED, FooocusExpansion, PositiveBias, new_token_budget
from fooocus_es.engine.models.store import ModelStore
from fooocus_es.engine.planning import plan as planning
from fooocus_es.engine.planning.demo_names import DEMO_CHECKPOINT
from fooocus_es.engine.planning.expansion_names import expansion_folder
from fooocus_es.engine.planning.plan_types import GenerationPlan
from fooocus_es.engine.planning.prompts import V2_SKIPPED_NOTE
from fooocus_es.media.metadata import a1111_parameters, fooocus_parameters

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Should have t[ab]"),  # torchsde's Brownian tree at sigma_min
]

PROMPT = "a cat in a beautiful garden"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_expansion(expansion_folder(tmp_path_factory.mktemp("models"), demo=True))


@pytest.fixture(scope="module")
def expansion(folder: Path) -> FooocusExpansion:
    torch.set_num_threads(1)  # a shared 2-core machine: more threads mostly spin-wait
    return FooocusExpansion(folder, "cpu", torch.float16)  # fp16 asked for: the CPU must still get float32


def new_tokens(expansion: FooocusExpansion, text: str, seed: int) -> tuple[list[int], list[int]]:
    prompt = expansion.tokenizer(text)["input_ids"]
    tokens = expansion.generate(text, seed)
    assert tokens is not None and tokens[: len(prompt)] == prompt
    return prompt, tokens[len(prompt) :]


@pytest.mark.parametrize(("tokens", "budget"), [(1, 74), (3, 72), (74, 1), (75, 0), (76, 74), (150, 0), (151, 74)])
def test_budget_fills_to_the_next_multiple_of_75(tokens: int, budget: int) -> None:
    assert new_token_budget(tokens) == budget


def test_fp16_bin_loads_as_float32_on_cpu(folder: Path, expansion: FooocusExpansion) -> None:
    saved = torch.load(folder / "pytorch_model.bin", weights_only=True)
    assert {tensor.dtype for tensor in saved.values()} == {torch.float16}
    assert expansion.model.dtype == torch.float32
    loaded = expansion.model.state_dict()["transformer.h.0.attn.c_attn.weight"]
    assert torch.equal(loaded, saved["transformer.h.0.attn.c_attn.weight"].float())


@pytest.mark.parametrize("words", [5, 80])  # one chunk, and past 75 tokens: two
def test_generation_ends_on_a_multiple_of_75_tokens(expansion: FooocusExpansion, words: int) -> None:
    text = " ".join(["cat", "dog", "tree", "house"] * 20)[: words * 4] + ","
    prompt, added = new_tokens(expansion, text, seed=3)
    assert len(prompt) < 75 * 2 and (len(prompt) + len(added)) % 75 == 0 and added


def test_a_full_chunk_comes_back_without_its_comma(expansion: FooocusExpansion) -> None:
    prompt = "a" + " cat" * 73  # 74 tokens, 75 with the comma
    assert len(expansion.tokenizer(prompt + ",")["input_ids"]) == 75
    assert expansion.generate(prompt + ",", 1) is None
    assert expansion.expand(prompt, 1) == prompt
    assert expansion.expand("", 1) == ""


def test_seed_decides_the_words(expansion: FooocusExpansion) -> None:
    first = expansion.expand(PROMPT, 11)
    assert first.startswith(PROMPT + ",") and len(first) > len(PROMPT) + 10
    assert expansion.expand(PROMPT, 11) == first
    assert expansion.expand(PROMPT, 11 + 2**32) == first  # the seed is taken mod 2**32, as Fooocus
    assert expansion.expand(PROMPT, 12) != first


def test_prompt_is_cleaned_first(expansion: FooocusExpansion) -> None:
    assert expansion.expand("  a cat   in a  beautiful garden. ,", 11) == expansion.expand(PROMPT, 11)


def test_only_positive_words_and_commas_none_twice(expansion: FooocusExpansion) -> None:
    vocab = expansion.tokenizer.get_vocab()
    positive = {vocab["Ġ" + word] for word in DEMO_POSITIVE_WORDS}
    comma = vocab[","]
    assert len(vocab) > len(positive) + 50  # other whole words exist that the bias must keep out
    for seed in range(2):
        prompt, added = new_tokens(expansion, PROMPT + ",", seed)
        words = [token for token in added if token != comma]
        assert set(words) <= positive and words
        assert len(words) == len(set(words))  # no repeats
        assert vocab["Ġbeautiful"] not in words  # already in the prompt: banned too


def test_bias_scores() -> None:
    bias = PositiveBias(8, allowed=[2, 5, 6], comma=3)
    scores = torch.zeros(1, 8)
    out = bias(torch.tensor([[5, 3, 1]]), scores)
    assert out[0].tolist() == [BANNED, BANNED, 0.0, 0.0, BANNED, BANNED, 0.0, BANNED]
    assert scores.abs().sum() == 0  # not edited in place


def test_caller_rng_untouched(expansion: FooocusExpansion) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    states = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    expansion.expand(PROMPT, 99)
    assert random.getstate() == states[0]
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])


def test_demo_folder_written_once(folder: Path) -> None:
    stamp = (folder / "pytorch_model.bin").stat().st_mtime_ns
    assert write_demo_expansion(folder) == folder
    assert (folder / "pytorch_model.bin").stat().st_mtime_ns == stamp
    assert not list(folder.parent.glob(".*tmp"))


# -- planning ------------------------------------------------------------------------------------------


def params_for(**sent: Any) -> dict[str, Any]:
    body = {
        "prompt": PROMPT, "negative_prompt": "blurry", "image_seed": 11, "overwrite_step": 2,
        "overwrite_width": 64, "overwrite_height": 64, "style_selections": ["Fooocus V2"], **sent,
    }  # fmt: skip
    return planning.finalize(planning.merge_layers(body))


def test_note_stays_without_the_folder(tmp_path: Path) -> None:
    plan = planning.build_plan("t", params_for(image_number=2), data_dir=tmp_path)
    assert V2_SKIPPED_NOTE in plan.notes and not any(plan.expansion_sources)
    assert "Fooocus V2" not in plan.styles


def test_installed_folder_plans_an_expansion_per_image(tmp_path: Path) -> None:
    expansion_folder(tmp_path / "models", demo=False).mkdir(parents=True)
    plan = planning.build_plan("t", params_for(prompt="a [[cat,dog]]\nsecond line", image_number=2), data_dir=tmp_path)
    assert V2_SKIPPED_NOTE not in plan.notes
    assert plan.expansion_sources == ("a cat", "a dog")  # the main line, arrays resolved, per image
    assert plan.styles == ("Fooocus V2",) and plan.expansions == ()
    empty = planning.build_plan("t", params_for(prompt=""), data_dir=tmp_path)
    assert empty.expansion_sources == ("",) and V2_SKIPPED_NOTE not in empty.notes


# -- engine --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(demo_models: Path) -> Engine:
    torch.set_num_threads(1)
    return Engine(ModelStore(demo_models, cache_bytes=10**9), demo_models.parent)


def demo_plan(demo_models: Path, styles: list[str], **sent: Any) -> GenerationPlan:
    params = params_for(base_model_name=DEMO_CHECKPOINT, style_selections=styles, **sent)
    return planning.build_plan("t", params, models_dir=demo_models)


def test_engine_appends_the_expansion_as_last_positive_part(engine: Engine, demo_models: Path) -> None:
    plain, v2 = demo_plan(demo_models, []), demo_plan(demo_models, ["Fooocus V2"], image_number=2)
    assert v2.notes == () and v2.expansion_sources == (PROMPT, PROMPT)
    expanded = engine.expanded(v2)
    first, second = expanded.expansions
    assert first.startswith(PROMPT + ", ") and second.startswith(PROMPT + ", ") and first != second  # seeds 11, 12

    pipe = engine.store.load_pipeline(DEMO_CHECKPOINT)
    with torch.inference_mode():
        without, with_v2 = (
            ConditioningCache(pipe, 2).for_image(plain, 0),
            ConditioningCache(pipe, 2).for_image(expanded, 0),
        )
    assert with_v2.prompt_embeds.shape[1] == 2 * without.prompt_embeds.shape[1]  # one more 77-token part
    assert torch.equal(with_v2.prompt_embeds[:, :77], without.prompt_embeds)
    assert torch.equal(with_v2.pooled_prompt_embeds, without.pooled_prompt_embeds)  # not in the pooled sum

    images, status = engine.generate(v2, Hooks())
    reference, _ = engine.generate(plain, Hooks())
    assert status == "finished" and [image.prompt_expansion for image in images] == [first, second]
    assert not np.array_equal(np.asarray(images[0].image), np.asarray(reference[0].image))
    meta = fooocus_parameters(params_for(), v2, 11, 0, images[0].prompt_expansion)
    assert meta["full_prompt"] == [PROMPT, first] and meta["prompt_expansion"] == first
    assert meta["styles"] == ["Fooocus V2"]
    assert a1111_parameters(params_for(), v2, 11, 0, first).splitlines()[0] == f"{PROMPT}, {first}"  # as encoded


def test_batched_path_gets_the_expansion(demo_models: Path) -> None:
    batched = Engine(ModelStore(demo_models, cache_bytes=10**9), demo_models.parent, max_batch=2)
    v2, plain = demo_plan(demo_models, ["Fooocus V2"], image_number=2), demo_plan(demo_models, [], image_number=2)
    assert batched.batches_tasks(v2)
    done: list[Any] = []
    batched.generate_batch(v2, Hooks(), admit=lambda _key, _free: [], on_done=lambda *ended: done.append(ended))
    ((_plan, images, status, error),) = done
    assert error is None and status == "finished"
    assert [image.prompt_expansion for image in images] == list(batched.expanded(v2).expansions)
    reference, _ = batched.generate(plain, Hooks())
    assert not np.array_equal(np.asarray(images[0].image), np.asarray(reference[0].image))
