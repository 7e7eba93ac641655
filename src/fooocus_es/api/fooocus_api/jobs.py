"""Tasks as Fooocus-API jobs: read from the live projection while queued or running, else from generate_record.

The read model is written in the same transaction as the terminal event, before the event is
published and the task leaves the live projection, so a job that no longer reads RUNNING already
has its stored result: `job_status` is never "Finished" with `job_result` still empty.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread
import msgspec

from fooocus_es.api import tasks
from fooocus_es.api.fooocus_api.kinds import WIRE_PREFIX, job_type_of
from fooocus_es.api.fooocus_api.responses import (
    AsyncJobResponse,
    GeneratedImageResult,
    JobHistoryResponse,
    JobQueueInfo,
    WebhookBody,
    WebhookResult,
    bare_base64,
    ended_job,
    history_info,
    image_results,
    result_seeds,
    succeeded,
)
from fooocus_es.events.types import TaskSkipped
from fooocus_es.projections.live import LiveTask
from fooocus_es.services import Services


def _live_job(task: LiveTask, preview: bool) -> AsyncJobResponse:
    return AsyncJobResponse(
        job_id=task.task_id,
        job_type=job_type_of(task.req_params, task.wire),
        job_stage="WAITING" if task.task_status == "pending" else "RUNNING",
        job_progress=max(0, min(100, int(task.progress))),
        job_status=task.message or None,
        job_step_preview=bare_base64(task.preview) if preview else None,
    )


async def job(services: Services, task_id: str, *, preview: bool = False) -> AsyncJobResponse | None:
    """query-job's answer for a task, or None when there is no such task."""
    live = services.live.get(task_id)
    if live is not None:
        return _live_job(live, preview)
    stored = await services.stored_record(task_id)
    if stored is None:
        return None
    return await ended_job_of(services, stored)


async def ended_job_of(services: Services, stored: dict[str, Any]) -> AsyncJobResponse:
    job_type = job_type_of(stored["req_params"], stored["wire"])
    results = await results_of(services, stored) if stored["task_status"] in ("finished", "skip", "stop") else None
    return ended_job(stored["task_id"], job_type, stored, results)


async def results_of(services: Services, stored: dict[str, Any]) -> list[GeneratedImageResult]:
    """The images of a stored task with their real seeds, base64 when the task asked require_base64."""
    paths: list[str] = stored["result"]
    if not paths:
        return []
    params = stored["req_params"]

    def read() -> tuple[set[int], list[str] | None]:
        skipped: set[int] = set()
        if stored["task_status"] in ("skip", "stop"):  # only these can have skipped an image
            events = services.event_log.read(task_id=stored["task_id"])
            skipped = {e.event.image_index for e in events if isinstance(e.event, TaskSkipped)}
        encoded = None
        if params.get("require_base64"):
            encoded = [base64.b64encode(services.data_path(path).read_bytes()).decode("ascii") for path in paths]
        return skipped, encoded

    skipped, encoded = await anyio.to_thread.run_sync(read)
    seeds = result_seeds(params, len(paths), skipped)
    return image_results([services.signer.url(path) for path in paths], seeds, encoded)


def webhook_body(services: Services) -> Callable[[str, dict[str, Any]], Awaitable[Any]]:
    """Fooocus-API's webhook body for its jobs (`{job_id, job_result: [{url, seed}]}`, no base64), else the record."""

    async def shape(task_id: str, record: dict[str, Any]) -> Any:
        if not str(record.get("wire", "")).startswith(WIRE_PREFIX):
            return record
        stored = await services.stored_record(task_id)
        ok = stored is not None and succeeded(stored["task_status"])
        results = await results_of(services, stored) if ok and stored is not None else []
        body = WebhookBody(job_id=task_id, job_result=[WebhookResult(url=item.url, seed=item.seed) for item in results])
        return msgspec.to_builtins(body)

    return shape


async def queue_info(services: Services) -> JobQueueInfo:
    def counts() -> tuple[int, str | None]:
        read_model = services.read_model
        return read_model.ended_count(), read_model.last_task_id()

    finished, last = await anyio.to_thread.run_sync(counts)
    running = len(services.live.pending) + len(services.live.running)
    return JobQueueInfo(running_size=running, finished_size=finished, last_job_id=last)


async def history(services: Services, job_id: str | None, page: int, page_size: int) -> JobHistoryResponse:
    """Queued and running jobs, then ended ones newest first (one page), or only `job_id`'s."""
    live = [*services.live.running.values(), *services.live.pending.values()]
    queue = [history_info(task.record()) for task in live if job_id is None or task.task_id == job_id]
    if job_id is not None:
        stored = await services.stored_record(job_id)
        rows = [stored] if stored is not None and stored["finish_mills"] is not None else []
    else:
        rows = await anyio.to_thread.run_sync(
            lambda: services.read_model.history(page=page, page_size=page_size)
        )
    return JobHistoryResponse(queue=queue, history=[history_info(row) for row in rows])


async def delete(services: Services, job_id: str) -> bool:
    """Remove an ended job's record and output files (DELETE /tasks/{task_id})."""
    return await tasks.delete_ended(services, job_id)
