"""What one describe-image call costs: BLIP (Photo) and WD14 (Anime) on the demo files, and full-size BLIP.

    .venv/bin/python bench/describe.py [--device cpu|cuda] [--runs 5] [--full]

Each row: the load (demo files written, model built), the first call, then the median ms of --runs
calls (seeds 1..runs, one 448x384 noise image), and the tokens BLIP generated per call.
`--full` adds a random-weight BLIP base built from config in code (ViT-B/16 at 384 + the BERT-base
decoder, vocab 30524, no download) with a synthetic 30522-word tokenizer: its sampling seldom draws
[SEP], so it runs to max_length 75, the worst case a real caption (10 to 20 tokens) stays under.
Prints a table; nothing is written.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fooocus_es.engine.planning.tool_types import DescribeRequest
from fooocus_es.engine.tools.describe import Describer
from fooocus_es.engine.tools.describe.blip import BlipCaptioner, load_tokenizer


class TokenCounter:
    """Wraps a model's generate to record how many tokens each call added after the prompt."""

    def __init__(self, model: Any) -> None:
        self.counts: list[int] = []
        self._generate = model.generate
        model.generate = self

    def __call__(self, **kwargs: Any) -> Any:
        output = self._generate(**kwargs)
        self.counts.append(int(output.shape[1] - (kwargs["input_ids"].shape[1] - 1)))  # [SEP] is dropped
        return output


def clock(make: Any) -> tuple[float, Any]:
    """(ms, make())."""
    started = time.perf_counter()
    made = make()
    return (time.perf_counter() - started) * 1000, made


def timed(call: Any, runs: int) -> tuple[float, float]:
    """(first call ms, median ms of `runs` further calls); `call(seed)`."""
    started = time.perf_counter()
    call(0)
    first = (time.perf_counter() - started) * 1000
    samples = []
    for seed in range(1, runs + 1):
        started = time.perf_counter()
        call(seed)
        samples.append((time.perf_counter() - started) * 1000)
    return first, statistics.median(samples)


def full_size_captioner(folder: Path, device: str, dtype: torch.dtype) -> BlipCaptioner:
    """Random BLIP base (seeded) and a 30522-word tokenizer, so the ids line up with the real vocabulary."""
    from transformers import BlipConfig, BlipForConditionalGeneration

    words = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += ["a", "picture", "of"] + [f"w{i}" for i in range(30522 - len(words) - 3)]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    tokenizer = load_tokenizer(folder)  # + [DEC] 30522, [ENC] 30523: bert-base-uncased's layout
    config = BlipConfig(text_config={"num_attention_heads": 12}, vision_config={"layer_norm_eps": 1e-6})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BlipForConditionalGeneration(config)
    return BlipCaptioner(model.to(device=device, dtype=dtype).eval(), tokenizer, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=int, default=5, help="timed calls per row, after the first")
    parser.add_argument("--full", action="store_true", help="add a random-weight full-size BLIP base")
    args = parser.parse_args()
    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (384, 448, 3), dtype=np.uint8))
    rows: list[tuple[str, float, float, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        describer = Describer(Path(tmp), args.device, dtype, construction=threading.RLock())
        load, captioner = clock(lambda: describer._captioner(demo=True))  # demo files written, model loaded
        counter = TokenCounter(captioner.model)
        first, median = timed(lambda seed: describer.describe(image, DescribeRequest(seed=seed), demo=True), args.runs)
        rows.append(("Photo, demo BLIP", load, first, median, f"{statistics.median(counter.counts):.0f} tokens"))
        anime = DescribeRequest(image_type="Anime")
        load, _tagger = clock(lambda: describer._tagger(demo=True))
        first, median = timed(lambda seed: describer.describe(image, anime, demo=True), args.runs)
        rows.append(("Anime, demo WD14 (448)", load, first, median, ""))
        if args.full:
            load, captioner = clock(lambda: full_size_captioner(Path(tmp), args.device, dtype))
            counter = TokenCounter(captioner.model)
            first, median = timed(lambda seed: captioner.caption(image, seed=seed), args.runs)
            note = f"{statistics.median(counter.counts):.0f} tokens (random weights: to max_length)"
            rows.append(("Photo, BLIP base (random)", load, first, median, note))
    threads = torch.get_num_threads()
    print(f"device {args.device}, {threads} threads, torch {torch.__version__}, python {sys.version.split()[0]}")
    print(f"{'row':26} {'load ms':>9} {'first ms':>9} {'median ms':>10}  per call")
    for name, load, first, median, note in rows:
        print(f"{name:26} {load:9.0f} {first:9.0f} {median:10.0f}  {note}")


if __name__ == "__main__":
    main()
