"""Memory stays flat over many tasks that switch checkpoints and LoRAs (the leak a server would show).

50 tasks run on one Engine whose ModelStore has the default cache (one pipeline: every checkpoint
switch unloads the other one and loads from disk again), alternating the demo checkpoint and a
second checkpoint in pairs (A A B B ...: the second task of a pair finds the first one's adapters
still loaded on the UNet), each task with 1 or 2 of 4 kohya LoRAs at varying weights.

The tasks run in a fresh Python process, so that nothing the other tests loaded sits in the
measured RSS. The process's resident set (/proc/self/statm) is read after every task, and after
gc.collect() at tasks 1, 10, 20, ..., 50. Task 10's reading is the reference: by then both
checkpoints, every LoRA and every code path have been loaded at least twice, so the allocator
pools and lazily imported modules are warm.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from engine_helpers import meta_demo_models
from safetensors.torch import load_file, save_file

from fooocus_es.engine.demo.loras import write_kohya_lora
from fooocus_es.engine.models.ldm_convert import UNET_PREFIX
from fooocus_es.engine.planning.demo_names import DEMO_CHECKPOINT

TASKS = 50
REFERENCE_TASK = 10
COLLECT_AFTER = (1, 10, 20, 30, 40, 50)  # tasks after which gc.collect() runs and RSS is compared
SECOND = "second_demo.safetensors"
LORAS = tuple(f"lora_{i}.safetensors" for i in range(4))
FEW_LAYERS = ("attn1.to_k", "attn2.to_v")  # peft's injection time grows with the adapted layers
MIB = 1024 * 1024
# One demo pipeline is 27.6 MiB of weights: a bound below it fails even if a single extra pipeline
# (let alone one per reload: ~550 MiB over tasks 10..50) is still held at the end. A flat process
# shows a few MiB between readings here (glibc arenas, torch's CPU allocator: +1..4 MiB over tasks
# 10..50, ~+5 MiB over 140 tasks in a longer run), so 24 MiB leaves a wide margin for noise.
MAX_GROWTH_BYTES = 24 * MIB

SCRIPT = textwrap.dedent(
    """
    import gc, json, os, sys, time
    from pathlib import Path

    import torch

    torch.set_num_threads(1)
    from fooocus_es.engine.planning import plan as planning
    from fooocus_es.engine.models.store import ModelStore
    from fooocus_es.engine.diffusion.pipeline import Engine

    models = Path(sys.argv[1])
    spec = json.loads(sys.argv[2])

    class Hooks:
        def on_step(self, image_index, step, steps, preview_jpeg):
            pass

        def poll_control(self):
            return None

    def rss():
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    store = ModelStore(models)  # the default cache: one pipeline
    engine = Engine(store, models.parent)
    raw, collected, adapters, started = [], {}, [], time.monotonic()
    for number, task in enumerate(spec["tasks"], start=1):
        params = planning.finalize(planning.merge_layers({
            "base_model_name": task["checkpoint"], "prompt": "a photo of a cat", "image_seed": task["seed"],
            "overwrite_step": 1, "overwrite_width": 64, "overwrite_height": 64, "style_selections": [],
            "loras": [{"enabled": True, "model_name": name, "weight": weight} for name, weight in task["loras"]],
        }))
        images, status = engine.generate(planning.build_plan("t", params, data_dir=models.parent), Hooks())
        assert status == "finished" and len(images) == 1, status
        del images
        pipe = store.load_pipeline(task["checkpoint"])  # a cache hit: the task's own pipeline
        adapters.append({part: len(names) for part, names in pipe.get_list_adapters().items()})
        del pipe
        raw.append(rss())
        if number in spec["collect_after"]:  # gc.collect() takes ~0.3 s here: only where it is compared
            gc.collect()
            collected[number] = rss()
    report = store.memory_report()
    print(json.dumps({
        "raw": raw, "collected": collected, "adapters": adapters, "models": report["models"],
        "seconds": time.monotonic() - started,
    }))
    """
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, demo_models: Path) -> Path:
    """The demo checkpoint, a second one (perturbed UNet) and four kohya LoRAs (one with text encoders)."""
    folder = tmp_path_factory.mktemp("memory-data") / "models"  # data dir: its parent
    demo = folder / "checkpoints" / DEMO_CHECKPOINT
    demo.parent.mkdir(parents=True)
    shutil.copyfile(demo_models / "checkpoints" / DEMO_CHECKPOINT, demo)
    state = load_file(str(demo))
    generator = torch.Generator().manual_seed(3)
    for key, tensor in state.items():
        if key.startswith(UNET_PREFIX) and tensor.is_floating_point():
            state[key] = tensor + 0.05 * torch.randn(tensor.shape, generator=generator)
    save_file(state, str(folder / "checkpoints" / SECOND), metadata={"format": "pt"})
    meta = meta_demo_models()
    for seed, name in enumerate(LORAS):
        encoders = [meta["te1"], meta["te2"]] if seed == 0 else []
        write_kohya_lora(
            folder / "loras" / name, meta["unet"], seed=seed, rank=16, scale=0.1, unet_targets=FEW_LAYERS,
            text_encoders=encoders,
        )  # fmt: skip
    return folder


def schedule() -> list[dict[str, object]]:
    tasks = []
    for i in range(TASKS):
        checkpoint = DEMO_CHECKPOINT if (i // 2) % 2 == 0 else SECOND
        loras = [(LORAS[i % 4], 0.5 + 0.1 * (i % 5))]
        if i % 3 == 0:
            loras.append((LORAS[(i + 1) % 4], 0.7))
        tasks.append({"checkpoint": checkpoint, "seed": i, "loras": loras})
    return tasks


def test_memory_stays_flat_over_50_tasks_switching_checkpoints_and_loras(
    models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks = schedule()
    assert sum(a["checkpoint"] != b["checkpoint"] for a, b in zip(tasks, tasks[1:], strict=False)) == 24
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(models), json.dumps({"tasks": tasks, "collect_after": COLLECT_AFTER})],
        capture_output=True, text=True, env=env, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    rss = {int(task): value for task, value in result["collected"].items()}
    assert sorted(rss) == list(COLLECT_AFTER) and len(result["raw"]) == TASKS
    at_reference, at_end = rss[REFERENCE_TASK], rss[TASKS]
    growth = at_end - at_reference
    later = [value for task, value in rss.items() if task >= REFERENCE_TASK]
    with capsys.disabled():
        print(
            f"\nmemory over {TASKS} tasks, {TASKS // 2 - 1} checkpoint reloads ({result['seconds']:.1f} s): "
            "RSS after gc.collect() "
            + ", ".join(f"task {task} {value / MIB:.1f} MiB" for task, value in rss.items())
            + f"; growth task {REFERENCE_TASK}->{TASKS} {growth / MIB:+.1f} MiB; "
            f"highest RSS after any task (no gc) {max(result['raw']) / MIB:.1f} MiB; adapters per component "
            f"max {max(max(a.values(), default=0) for a in result['adapters'])}"
        )
    assert growth < MAX_GROWTH_BYTES, f"RSS grew {growth / MIB:.1f} MiB from task {REFERENCE_TASK} to {TASKS}"
    # No step-wise climb hidden by a lucky last reading either.
    assert max(later) - min(later) < MAX_GROWTH_BYTES
    # One pipeline held at the end (the default cache), the last task's checkpoint.
    assert [(m["kind"], m["name"]) for m in result["models"]] == [("checkpoints", tasks[-1]["checkpoint"])]
    # Adapters stay bounded: a reload starts bare, so a UNet carries exactly the LoRAs used since its
    # checkpoint was loaded (at most 3 here; loras.py would evict beyond 8 anyway).
    since_load: set[str] = set()
    for index, (task, adapters) in enumerate(zip(tasks, result["adapters"], strict=True)):
        if index == 0 or task["checkpoint"] != tasks[index - 1]["checkpoint"]:
            since_load = set()
        since_load |= {name for name, _ in task["loras"]}  # type: ignore[attr-defined]
        assert adapters["unet"] == len(since_load) <= 8, (index, adapters, since_load)
        text_adapters = 1 if LORAS[0] in since_load else 0
        assert adapters.get("text_encoder", 0) == adapters.get("text_encoder_2", 0) == text_adapters, (index, adapters)
