"""Webhook delivery: when a task ends, POST its final record (a JSON object) to the task's URL.

A bus listener that only schedules work: each delivery runs as its own task in the app's task group,
with retries and exponential backoff, so a slow or dead receiver never stalls anything else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import structlog
from anyio.abc import TaskGroup

from fooocus_es import __version__
from fooocus_es.events.types import Envelope, is_terminal

log = structlog.get_logger("fooocus_es.webhooks")

RecordLoader = Callable[[str], Awaitable[dict[str, Any] | None]]
# The body to POST for a final record: the record itself unless the task's wire has its own shape.
BodyShaper = Callable[[str, dict[str, Any]], Awaitable[Any]]


async def record_as_body(_task_id: str, record: dict[str, Any]) -> Any:
    return record


@dataclass(eq=False)
class WebhookSender:
    task_group: TaskGroup
    load_record: RecordLoader  # the final record, URLs rendered
    default_url: str
    retries: int = 3
    timeout_s: float = 5.0
    backoff_s: float = 0.5
    shape_body: BodyShaper = record_as_body

    def apply(self, envelope: Envelope) -> None:
        if is_terminal(envelope.event):
            self.task_group.start_soon(self._deliver, envelope.event.task_id)

    async def _deliver(self, task_id: str) -> None:
        record = await self.load_record(task_id)
        if record is None:
            return
        url = record.get("webhook_url") or self.default_url
        if not url:
            return
        headers = {"User-Agent": f"fooocus-es/{__version__}", "X-Fooocus-Task-Id": task_id}
        body = await self.shape_body(task_id, record)
        async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=True) as client:
            for attempt in range(1, self.retries + 2):
                try:
                    response = await client.post(url, json=body, headers=headers)
                    if response.status_code < 300:
                        log.info("webhook.delivered", task_id=task_id, url=url, attempt=attempt)
                        return
                    reason = f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                log.warning("webhook.failed", task_id=task_id, url=url, attempt=attempt, reason=reason)
                if attempt <= self.retries:
                    await anyio.sleep(self.backoff_s * 2 ** (attempt - 1))
        log.error("webhook.gave_up", task_id=task_id, url=url, attempts=self.retries + 1)
