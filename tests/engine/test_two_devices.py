"""Two runners' engines in one process (`--devices cpu,cpu`, or two GPUs): loads must not overlap.

Loading patches torch process-wide (accelerate's and peft's init_empty_weights swap
nn.Module.register_parameter while they run); two loads at once left it swapped for good, and every
later model got meta or garbage weights (NaN latents). The stores of a process share one lock.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch
from engine_helpers import Hooks

from fooocus_es.engine.diffusion.pipeline import Engine
from fooocus_es.engine.models.store import ModelStore
from fooocus_es.engine.planning import plan as planning
from fooocus_es.engine.planning.demo_names import DEMO_CHECKPOINT


def _plan(models: Path, seed: int) -> planning.GenerationPlan:
    body = {
        "base_model_name": DEMO_CHECKPOINT, "prompt": "a lighthouse", "image_seed": seed, "style_selections": [],
        "performance_selection": "Lightning", "overwrite_step": 6, "overwrite_width": 64, "overwrite_height": 64,
    }  # fmt: skip
    params = planning.finalize(planning.merge_layers(body))
    return planning.build_plan(f"t{seed}", params, data_dir=models.parent)


def test_two_engines_loading_and_sampling_at_once_give_the_pixels_of_one_alone(demo_models: Path) -> None:
    torch.set_num_threads(1)
    register = torch.nn.Module.register_parameter
    shared = threading.RLock()
    engines = [Engine(ModelStore(demo_models, load_lock=shared), demo_models.parent) for _ in range(2)]
    assert engines[0].store.construction is engines[1].store.construction
    results: dict[int, np.ndarray | BaseException] = {}
    start = threading.Barrier(2)

    def run(index: int) -> None:
        start.wait()  # both load their pipeline and the performance LoRA at the same moment
        try:
            images, _status = engines[index].generate(_plan(demo_models, seed=index + 1), Hooks())
            results[index] = np.asarray(images[0].image)
        except BaseException as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert torch.nn.Module.register_parameter is register  # nothing left patched
    alone = Engine(ModelStore(demo_models), demo_models.parent)
    for index in range(2):
        together = results[index]
        assert isinstance(together, np.ndarray), together
        by_itself = np.asarray(alone.generate(_plan(demo_models, seed=index + 1), Hooks())[0][0].image)
        assert np.array_equal(together, by_itself)
