"""Models (files and memory), styles, presets and health."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from litestar import HttpMethod, get, route
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example

from fooocus_es import __version__
from fooocus_es.api import examples
from fooocus_es.engine.models.catalog import tool_files_on_disk
from fooocus_es.engine.planning import presets
from fooocus_es.engine.planning.image_prompt_files import IMAGE_PROMPT_DOWNLOADS
from fooocus_es.fleet.presence import RunnerInfo

if TYPE_CHECKING:  # resolved through the signature namespace (api/deps.py)
    from fooocus_es.engine.models.store import ModelStore
    from fooocus_es.engine.planning.styles import StyleBook
    from fooocus_es.services import Services
    from fooocus_es.settings import Settings


def image_prompt_files_on_disk(models_dir: Path) -> list[str]:
    """The catalogue's image prompt files found in models/controlnet and models/clip_vision."""
    return sorted(name for name, (kind, _url) in IMAGE_PROMPT_DOWNLOADS.items() if (models_dir / kind / name).is_file())


def model_files(store: ModelStore) -> dict[str, list[str]]:
    """Blocking: the model folders' listings, as FooocusAPI names them."""
    return {
        "model_filenames": store.list_checkpoints(),
        "lora_filenames": store.list_loras(),
        "vae_filenames": store.list_vaes(),
        # Image prompt files (IP-Adapters, Control-LoRAs, CLIP vision, the face detector); not in FooocusAPI.
        "controlnet_filenames": image_prompt_files_on_disk(store.models_dir),
        # The tools' files (describe-image, generate_mask, enhance), as models/<folder>/<key>; not in FooocusAPI.
        "tool_filenames": tool_files_on_disk(store.models_dir),
    }


@get("/all-models", summary="Model files on disk", responses=examples.MODELS_RESPONSES)
async def all_models(model_store: NamedDependency[ModelStore]) -> dict[str, list[str]]:
    return await anyio.to_thread.run_sync(model_files, model_store)


_MEMORY_EXAMPLE: dict[str, Any] = {
    "device": "cuda",
    "budget_bytes": 12884901888,
    "cached_bytes": 6938040682,
    "models": [{"kind": "checkpoints", "name": "juggernautXL_v8Rundiffusion.safetensors", "bytes": 6938040682}],
    "process_rss_bytes": 3221225472,
    "process_peak_rss_bytes": 9663676416,
    "cuda": {"allocated_bytes": 7046430720, "reserved_bytes": 7369392128, "free_bytes": 16441131008,
             "total_bytes": 25386352640},
}  # fmt: skip
_FREED = [{"kind": "checkpoints", "name": "juggernautXL_v8Rundiffusion.safetensors", "bytes": 6938040682}]
MEMORY_RESPONSES = {
    200: ResponseSpec(data_container=dict[str, Any], generate_examples=False, examples=[Example(value=_MEMORY_EXAMPLE)])
}
CLEAN_VRAM_RESPONSES = {
    200: ResponseSpec(
        data_container=dict[str, Any],
        generate_examples=False,
        examples=[
            Example(
                value={
                    "message": "ok",
                    "freed": _FREED,
                    "memory": {
                        **_MEMORY_EXAMPLE,
                        "cached_bytes": 0,
                        "models": [],
                        "cuda": {**_MEMORY_EXAMPLE["cuda"], "allocated_bytes": 0, "reserved_bytes": 0},
                    },
                }
            )
        ],
    )
}


@get(
    "/memory",
    summary="Loaded models, the model cache budget, process and CUDA memory",
    responses=MEMORY_RESPONSES,
)
async def memory(model_store: NamedDependency[ModelStore]) -> dict[str, Any]:
    return await anyio.to_thread.run_sync(model_store.memory_report)


@route(
    "/clean_vram",
    http_method=[HttpMethod.GET, HttpMethod.POST],
    status_code=200,
    summary="Unload every cached model (FooocusAPI's clean_vram); a running task keeps what it uses",
    responses=CLEAN_VRAM_RESPONSES,
)
async def clean_vram(model_store: NamedDependency[ModelStore]) -> dict[str, Any]:
    store = model_store

    def clean() -> dict[str, Any]:
        freed = store.free()["freed"]
        return {"message": "ok", "freed": freed, "memory": store.memory_report()}  # message: FooocusAPI's answer

    return await anyio.to_thread.run_sync(clean)


@get("/styles", summary="Every style name", responses=examples.STYLES_RESPONSES)
async def styles(style_book: NamedDependency[StyleBook]) -> list[str]:
    return list(await anyio.to_thread.run_sync(style_book.names))


@get(
    "/presets",
    summary="Preset names (bundled and the data dir's presets/)",
    responses=examples.PRESETS_RESPONSES,
)
async def preset_list(settings: NamedDependency[Settings]) -> dict[str, Any]:
    return {"presets": presets.list_presets(settings.data_dir), "server_preset": settings.preset}


@get(
    "/health",
    summary="Readiness, device, loaded model, queue depth, missing model files",
    responses=examples.HEALTH_RESPONSES,
)
async def health(services: NamedDependency[Services]) -> dict[str, Any]:
    missing, downloading = services.downloads.status.snapshot()
    preset_model = services.preset_defaults.get("base_model_name")
    faults = services.storage.faults()
    # Why it is not ready, one line each: what an operator has to fix.
    not_ready = [f"storage: {fault.describe()}" for fault in faults]
    if services.settings.runner and preset_model in missing:
        not_ready.append(f"model: {preset_model} is missing ({missing[preset_model]})")
    if services.settings.runner and not services.runners.alive:
        not_ready.append("runner: a runner thread is not running")
    try:
        runners = await anyio.to_thread.run_sync(services.runner_states)
    except ConnectionError as exc:  # the fleet's NATS server is away: nothing can be queued or run
        runners = []
        not_ready.append(f"fleet: {exc}")
    return {
        "status": "ok",
        # Ready to generate with the server's preset: its checkpoint is on disk (or made on first use),
        # the runner runs, and the log and the data dir can be written. An API node of a fleet
        # (--no-runner) needs no models: runners hold them.
        "ready": not not_ready,
        "not_ready": not_ready,
        "storage": [{"place": f.place, "kind": f.kind, "reason": f.describe(), "since_ms": f.since_ms} for f in faults],
        "version": __version__,
        "device": services.device,
        "preset": services.settings.preset,
        "loaded_model": services.loaded_model_name,
        "queue_depth": services.live.depth,
        "running": [record["task_id"] for record in services.live.current_records()],
        "missing_models": missing,
        "downloading": downloading,
        # This process's runners, or in a fleet every runner that beat lately (GET /runners has the details).
        "runners": {state: sum(1 for info in runners if info.state == state) for state in ("idle", "busy", "stale")},
    }


@get(
    "/runners",
    summary="The runners: this process's, or in a fleet every runner's presence",
    responses=examples.RUNNERS_RESPONSES,
)
async def runners(services: NamedDependency[Services]) -> dict[str, list[RunnerInfo]]:
    return {"runners": await services.runner_list()}
