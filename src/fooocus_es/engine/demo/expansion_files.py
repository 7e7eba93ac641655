"""A tiny random-weight GPT-2 prompt expansion folder, so Fooocus V2 runs offline on the demo model.

Laid out like Fooocus's `models/prompt_expansion/fooocus_expansion/`: `config.json`, an fp16
`pytorch_model.bin` (the real file is an fp16 pickle too), tokenizer files and `positive.txt`, so
it goes through the same loader. The tokenizer is a byte-level BPE trained here on a small word
list, every word one `Ġword` token, as in GPT-2's vocab. Its expansions are random words by design.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Final

from fooocus_es.engine.planning.expansion_names import POSITIVE_WORDS_FILE

END_TOKEN: Final = "<|endoftext|>"
_SEED: Final = 20240612
# The words the bias lets through; this project's own list, not Fooocus's.
DEMO_POSITIVE_WORDS: Final = (
    "beautiful", "detailed", "cinematic", "dramatic", "elegant", "intricate", "vibrant", "glowing", "epic",
    "majestic", "serene", "colorful", "sharp", "focus", "light", "radiant", "vivid", "moody", "dreamy", "ornate",
    "luminous", "gorgeous", "stunning", "atmospheric", "mystical", "delicate", "polished", "crisp", "rich",
    "soft", "warm", "golden", "cosmic", "peaceful", "refined", "lush", "striking", "magical", "graceful", "bright",
)  # fmt: skip
# Words in the vocab that the bias must keep out.
_OTHER_WORDS: Final = (
    "cat", "dog", "house", "tree", "river", "mountain", "city", "street", "woman", "man", "portrait", "forest",
    "ocean", "castle", "garden", "car", "bird", "flower", "sky", "road", "ugly", "blurry", "dark", "boring",
)  # fmt: skip


def write_demo_expansion(folder: Path) -> Path:
    """Write the folder unless it exists (atomically: a whole folder or none); the caller's RNG is untouched."""
    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(temp, ignore_errors=True)
    try:
        _write(temp)
        os.replace(temp, folder)
    except OSError:
        if not (folder / "config.json").is_file():  # another process won the race: its folder is as good
            raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return folder


def _write(folder: Path) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = _train_tokenizer()
    tokenizer.save_pretrained(folder)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=1024, n_embd=32, n_layer=2, n_head=2,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model = GPT2LMHeadModel(config)
    config.save_pretrained(folder)
    torch.save({key: value.detach().half().clone() for key, value in model.state_dict().items()},
               folder / "pytorch_model.bin")  # fmt: skip
    (folder / POSITIVE_WORDS_FILE).write_text("\n".join(word.title() for word in DEMO_POSITIVE_WORDS) + "\n")


def _train_tokenizer() -> Any:
    """A byte-level BPE whose merges make every demo word a single `Ġword` token (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    words = (*DEMO_POSITIVE_WORDS, *_OTHER_WORDS)
    corpus = [" " + " ".join(words) + ", " + ", ".join(words)] * 8 + ["a the of and in with on, . ! 0 1 2 3"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700, special_tokens=[END_TOKEN], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )  # fmt: skip
    tokenizer.train_from_iterator(corpus, trainer)
    return GPT2TokenizerFast(tokenizer_object=tokenizer, bos_token=END_TOKEN, eos_token=END_TOKEN, unk_token=END_TOKEN)
