"""Models, styles, presets and health."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from litestar import Request, get

from fooocus_es import __version__
from fooocus_es.api import examples
from fooocus_es.engine import presets
from fooocus_es.services import Services


@get("/v1/engines/all-models", summary="Model files on disk", tags=["engines"], responses=examples.MODELS_RESPONSES)
async def all_models(request: Request) -> dict[str, list[str]]:
    services: Services = request.app.state.services
    store = services.model_store

    def scan() -> dict[str, list[str]]:
        return {
            "model_filenames": store.list_checkpoints(),
            "lora_filenames": store.list_loras(),
            "vae_filenames": store.list_vaes(),
        }

    return await anyio.to_thread.run_sync(scan)


@get("/v1/engines/styles", summary="Every style name", tags=["engines"], responses=examples.STYLES_RESPONSES)
async def styles(request: Request) -> list[str]:
    services: Services = request.app.state.services
    return list(await anyio.to_thread.run_sync(services.style_book.names))


@get(
    "/v1/engines/presets",
    summary="Preset names (bundled and the data dir's presets/)",
    tags=["engines"],
    responses=examples.PRESETS_RESPONSES,
)
async def preset_list(request: Request) -> dict[str, Any]:
    services: Services = request.app.state.services
    return {"presets": presets.list_presets(services.settings.data_dir), "server_preset": services.settings.preset}


@get(
    "/health",
    summary="Readiness, device, loaded model, queue depth, missing model files",
    tags=["ops"],
    responses=examples.HEALTH_RESPONSES,
)
async def health(request: Request) -> dict[str, Any]:
    services: Services = request.app.state.services
    with services.model_status.lock:
        missing = dict(services.model_status.missing)
        downloading = dict(services.model_status.downloading)
    preset_model = services.preset_defaults.get("base_model_name")
    return {
        "status": "ok",
        # Ready to generate with the server's preset: its checkpoint is on disk (or made on first use).
        "ready": preset_model not in missing and services.runner.alive,
        "version": __version__,
        "device": services.device,
        "preset": services.settings.preset,
        "loaded_model": services.loaded_model_name,
        "queue_depth": services.live.depth,
        "running": [record["task_id"] for record in services.live.current_records()],
        "missing_models": missing,
        "downloading": downloading,
    }
