"""Fooocus V2 prompt expansion: a GPT-2 that appends style words to the prompt (Fooocus extras/expansion.py).

The behaviour, as described in the implementation brief §6: the cleaned prompt plus "," is
continued by sampling (top-k 100) to the next multiple of 75 tokens, with every token outside the
positive word list banned, every token already in the text banned, and the comma always allowed.
Seeded per image, inside `fork_rng`, so the caller's random streams are left as they were.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import numpy as np
import torch

from fooocus_es.engine.models.store import ModelMissing, ModelUnsupported
from fooocus_es.engine.planning.expansion_names import EXPANSION_FOLDER, POSITIVE_WORDS_FILE, expansion_folder
from fooocus_es.engine.planning.prompts import clean_line

CHUNK_TOKENS: Final = 75  # CLIP's words per chunk: the expansion fills the prompt's last chunk
BANNED: Final = -8192.0  # Fooocus's bias: low enough that top-k never keeps such a token
SEED_LIMIT: Final = 2**32  # NumPy's seed range, which transformers' set_seed feeds


def new_token_budget(prompt_tokens: int) -> int:
    """Tokens to generate so the text ends on a multiple of 75 (0 when it already does)."""
    return CHUNK_TOKENS * math.ceil(prompt_tokens / CHUNK_TOKENS) - prompt_tokens


def positive_token_ids(vocab: dict[str, int], words: Iterable[str]) -> list[int]:
    """Each word lowercased and prefixed with GPT-2's space marker "Ġ"; words not in the vocab are dropped."""
    return sorted({vocab[key] for key in ("Ġ" + word.lower() for word in words if word) if key in vocab})


class PositiveBias:
    """The logits processor: only positive words and commas, and no token twice (added to the scores)."""

    def __init__(self, vocab_size: int, allowed: Iterable[int], comma: int) -> None:
        self.bias = torch.full((vocab_size,), BANNED)
        self.bias[list(allowed)] = 0.0
        self.comma = comma

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        bias = self.bias.to(scores.device, scores.dtype).expand_as(scores).clone()
        bias.scatter_(1, input_ids.to(scores.device), BANNED)  # no repeats, of the prompt's tokens too
        bias[:, self.comma] = 0.0
        return scores + bias


class FooocusExpansion:
    """A loaded expansion folder (config.json, pytorch_model.bin, tokenizer files, positive.txt)."""

    def __init__(self, folder: Path, device: str, dtype: torch.dtype, *, lock: threading.RLock | None = None) -> None:
        """`lock`: held while sampling, since the seeding touches process-wide generators (other
        devices' runner threads take the same lock)."""
        from transformers import AutoTokenizer, GPT2LMHeadModel

        folder = Path(folder)
        self.device = device
        self.lock = lock or threading.RLock()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        # transformers 5 loads the fp16 .bin as fp16 unless told; the CPU gets float32.
        load_dtype = torch.float32 if torch.device(device).type == "cpu" else dtype
        self.model = GPT2LMHeadModel.from_pretrained(folder, dtype=load_dtype).to(device).eval()
        words = (folder / POSITIVE_WORDS_FILE).read_text(encoding="utf-8").splitlines()
        allowed = positive_token_ids(self.tokenizer.get_vocab(), words)
        if not allowed:
            raise ValueError(f"no word of {POSITIVE_WORDS_FILE} is a single token of this tokenizer")
        comma = self.tokenizer(",", add_special_tokens=False)["input_ids"]
        if len(comma) != 1:
            raise ValueError(f"the tokenizer splits ',' into {len(comma)} tokens")
        self.bias = PositiveBias(self.model.config.vocab_size, allowed, comma[0])

    def expand(self, prompt: str, seed: int) -> str:
        """The prompt with the model's words appended (as Fooocus, the prompt itself comes back first)."""
        if not prompt:
            return ""
        text = clean_line(prompt) + ","
        tokens = self.generate(text, seed)
        if tokens is None:  # the text already ends a 75-token chunk
            return text[:-1]
        return clean_line(self.tokenizer.decode(tokens, skip_special_tokens=True))

    def generate(self, text: str, seed: int) -> list[int] | None:
        """All token ids, `text`'s then the sampled ones, up to the next multiple of 75; None if none to add."""
        from transformers import LogitsProcessorList

        inputs = self.tokenizer(text, return_tensors="pt").to(self.device)
        budget = new_token_budget(int(inputs["input_ids"].shape[1]))
        if budget == 0:
            return None
        with self.lock, _seeded(seed % SEED_LIMIT, self.device), torch.inference_mode():
            tokens = self.model.generate(
                **inputs, top_k=100, max_new_tokens=budget, do_sample=True,
                logits_processor=LogitsProcessorList([self.bias]), pad_token_id=self.tokenizer.eos_token_id,
            )  # fmt: skip
        return [int(token) for token in tokens[0]]


@contextmanager
def _seeded(seed: int, device: str) -> Iterator[None]:
    """Python, NumPy and torch seeded (as transformers' `set_seed`), every generator restored afterwards.

    `torch.manual_seed` reseeds every CUDA device, so all of them are forked, not just this one.
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    cuda = torch.device(device).type == "cuda"
    try:
        with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if cuda else []):
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


class ExpansionModels:
    """One device's expansion model: loaded on first use under the process's construction lock, then kept."""

    def __init__(self, models_dir: Path, device: str, dtype: torch.dtype, *, construction: threading.RLock) -> None:
        self.models_dir = Path(models_dir)
        self.device = device
        self.dtype = dtype
        self.construction = construction
        self._loaded: tuple[Path, FooocusExpansion] | None = None

    def get(self, *, demo: bool) -> FooocusExpansion:
        folder = expansion_folder(self.models_dir, demo=demo)
        if self._loaded is not None and self._loaded[0] == folder:
            return self._loaded[1]
        with self.construction:
            if demo:
                from fooocus_es.engine.demo.expansion_files import write_demo_expansion

                write_demo_expansion(folder)
            elif not folder.is_dir():
                raise ModelMissing(EXPANSION_FOLDER, folder)
            try:
                model = FooocusExpansion(folder, self.device, self.dtype, lock=self.construction)
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise ModelUnsupported(EXPANSION_FOLDER, folder, str(exc)) from exc
        self._loaded = (folder, model)
        return model

    def free(self) -> None:
        self._loaded = None
