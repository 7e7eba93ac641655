"""Fooocus-API's response shapes (fooocusapi/models/common/response.py, task.py) and how a task maps onto them.

Field order and nulls as upstream sends them: clients index these objects directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, Literal

from msgspec import Struct

from fooocus_es.api.fooocus_api.kinds import JobType
from fooocus_es.engine.planning.plan import image_seeds

JobStage = Literal["WAITING", "RUNNING", "SUCCESS", "ERROR"]
FinishReason = Literal["SUCCESS", "QUEUE_IS_FULL", "USER_CANCEL", "ERROR"]

# Our task statuses -> upstream's stage. A stopped task ends as SUCCESS with the images made so
# far, as upstream's interrupted job does; skip is a finished task that dropped an image.
STAGES: Final[Mapping[str, JobStage]] = MappingProxyType(
    {
        "pending": "WAITING",
        "running": "RUNNING",
        "finished": "SUCCESS",
        "skip": "SUCCESS",
        "stop": "SUCCESS",
        "failed": "ERROR",
        "cancelled": "ERROR",
    }
)
FINISHED: Final = "Finished"  # the exact job_status of a successful job; breakeneck's only stop condition


class GeneratedImageResult(Struct):
    base64: str | None  # bare base64 of the file, only when the job asked require_base64
    url: str | None
    seed: str  # a string upstream (GeneratedImageResult.seed: str)
    finish_reason: FinishReason = "SUCCESS"


class WebhookResult(Struct):
    url: str | None
    seed: str


class WebhookBody(Struct):
    """What Fooocus-API POSTs to a job's webhook_url when it ends (worker.py: no base64)."""

    job_id: str
    job_result: list[WebhookResult]


class AsyncJobResponse(Struct):
    job_id: str
    job_type: JobType
    job_stage: JobStage
    job_progress: int
    job_status: str | None = None
    job_step_preview: str | None = None  # bare base64, only with require_step_preview
    job_result: list[GeneratedImageResult] | None = None


class JobQueueInfo(Struct):
    running_size: int  # queued + running
    finished_size: int
    last_job_id: str | None


class JobHistoryInfo(Struct):
    job_id: str
    in_queue_mills: int
    start_mills: int  # 0 until started, as upstream's QueueTask
    finish_mills: int
    is_finished: bool = False


class JobHistoryResponse(Struct):
    queue: list[JobHistoryInfo]
    history: list[JobHistoryInfo]


class HistoryMessage(Struct):
    """job-history?delete=true answers this instead of the lists."""

    message: Literal["Deleted", "Not found"]


class StopResponse(Struct):
    msg: str = "success"


JOB_NOT_FOUND: Final = AsyncJobResponse(
    job_id="", job_type="Not Found", job_stage="ERROR", job_progress=0, job_status="Job not found"
)
QUEUE_IS_FULL: Final = GeneratedImageResult(base64=None, url=None, seed="", finish_reason="QUEUE_IS_FULL")


def succeeded(task_status: str | None) -> bool:
    return STAGES.get(task_status or "") == "SUCCESS"


def bare_base64(data_url: str | None) -> str | None:
    """`data:image/jpeg;base64,xxx` -> `xxx`: a data URL breaks clients that decode the preview as base64."""
    if data_url is None or not data_url.startswith("data:"):
        return data_url
    return data_url.partition(",")[2]


def result_seeds(params: Mapping[str, Any], count: int, skipped: set[int]) -> list[int]:
    """The seed of each of `count` saved images: the engine runs image_seeds in order, leaving out skipped
    images and stopping early on stop (and after one image when no diffusion runs, e.g. Fast upscale)."""
    seeds = [seed for index, seed in enumerate(image_seeds(params)) if index not in skipped][:count]
    return seeds + [params["image_seed"]] * (count - len(seeds))


def image_results(urls: list[str], seeds: list[int], encoded: list[str] | None) -> list[GeneratedImageResult]:
    return [
        GeneratedImageResult(base64=encoded[index] if encoded is not None else None, url=url, seed=str(seeds[index]))
        for index, url in enumerate(urls)
    ]


def ended_job(
    job_id: str, job_type: JobType, record: Mapping[str, Any], results: list[GeneratedImageResult] | None
) -> AsyncJobResponse:
    """An ended task (a generate_record row); `results` are its images when it succeeded."""
    status = record["task_status"]
    stage = STAGES.get(status, "ERROR")
    if stage == "SUCCESS":
        return AsyncJobResponse(job_id, job_type, stage, 100, FINISHED, None, results or [])
    if stage != "ERROR":  # a stored pending/running row not (yet) in the live projection
        return AsyncJobResponse(job_id, job_type, stage, int(record.get("progress") or 0))
    error = record.get("error") or {}
    message = error.get("message") or ("Cancelled" if status == "cancelled" else str(status))
    return AsyncJobResponse(job_id, job_type, "ERROR", 100, message)


def history_info(record: Mapping[str, Any]) -> JobHistoryInfo:
    return JobHistoryInfo(
        job_id=record["task_id"],
        in_queue_mills=record["in_queue_mills"] or 0,
        start_mills=record["start_mills"] or 0,
        finish_mills=record["finish_mills"] or 0,
        is_finished=record["finish_mills"] is not None,
    )
