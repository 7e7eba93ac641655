"""The native API's URL map: one Router per area sets the path prefix and the OpenAPI tag once.

The OpenAI-compatible and the older Fooocus-API routes bring their own routers (their modules own
their error shapes and tags); the browser page and the doc pages are plain, untagged handlers.
"""

from __future__ import annotations

from litestar import Router

from fooocus_es.api import engines, files, generate, task_stream, tasks
from fooocus_es.api.tools import tools_router
from fooocus_es.ops.metrics import MetricsController


def native_routers() -> list[Router]:
    engine_files = [engines.all_models, engines.memory, engines.clean_vram, engines.styles, engines.preset_list]
    return [
        Router(path="/v1/engine", tags=["generate"], route_handlers=[generate.generate, tasks.control]),
        Router(
            path="/tasks",
            tags=["tasks"],
            route_handlers=[
                tasks.list_tasks, tasks.TaskController, tasks.task_events, task_stream.task_stream,
                tasks.cancel_task,
            ],  # fmt: skip
        ),
        Router(path="/", tags=["files"], route_handlers=[files.outputs, files.inputs]),
        Router(
            path="/v1/engines",
            tags=["engines"],
            route_handlers=engine_files,
        ),
        Router(path="/", tags=["ops"], route_handlers=[engines.health, engines.runners, MetricsController]),
        tools_router(),
    ]
