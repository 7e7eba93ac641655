"""Webhook delivery: when a task ends, POST its final record (a JSON object) to the task's URL.

A positioned consumer of the log that survives crashes: it follows the log from the outbox's
position, records each webhook owed in the outbox (with the position, in one transaction), then
delivers it as its own task with retries and exponential backoff, recording every attempt. On
start it catches up from the position and retries what was not delivered, so a webhook owed when
the server was killed or the receiver was down is delivered after restart. A receiver may see a
webhook twice only if the server dies between the receiver's 2xx and writing it down.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import anyio.to_thread
import httpx
import structlog
from anyio.abc import TaskGroup, TaskStatus

from fooocus_es import __version__
from fooocus_es.events.log import EventLog, pages
from fooocus_es.events.types import Envelope, is_terminal, now_ms
from fooocus_es.ops.storage import until_stored
from fooocus_es.subscribers.webhook_outbox import Delivery, WebhookOutbox

log = structlog.get_logger("fooocus_es.webhooks")

RecordLoader = Callable[[str], Awaitable[dict[str, Any] | None]]
# The body to POST for a final record: the record itself unless the task's wire has its own shape.
BodyShaper = Callable[[str, dict[str, Any]], Awaitable[Any]]
RETRY_FOR_MS = 24 * 3600 * 1000  # webhooks owed for longer than this are not retried at start


async def record_as_body(_task_id: str, record: dict[str, Any]) -> Any:
    return record


@dataclass(eq=False)
class WebhookSender:
    task_group: TaskGroup
    event_log: EventLog
    outbox: WebhookOutbox
    load_record: RecordLoader  # the final record, URLs rendered
    url_of: Callable[[str], str]  # worker thread: the task's webhook URL ("" for none)
    applied: Callable[[int], Awaitable[None]]  # waits until the read model has applied a seq
    retries: int = 3
    timeout_s: float = 5.0
    backoff_s: float = 0.5
    shape_body: BodyShaper = record_as_body

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        position = await anyio.to_thread.run_sync(self.outbox.position)
        # Catch up: terminal events stored after the position (the read model is current at start;
        # this runs before the server takes requests, so reading on the loop holds nobody up).
        for page in pages(self.event_log.read(after_seq=position)):
            await anyio.to_thread.run_sync(self.outbox.record_ended, page, self.url_of)
            position = page[-1].seq
        owed = await anyio.to_thread.run_sync(self.outbox.undelivered, now_ms() - RETRY_FOR_MS)
        for delivery in owed:
            self.task_group.start_soon(self._deliver, delivery)
        if owed:
            log.info("webhooks.resumed", count=len(owed))
        task_status.started()
        async for batch in self.event_log.tail(position):
            if not any(_ends(envelope) for envelope in batch):
                continue  # the position moves with the next batch that owes something
            await self.applied(batch[-1].seq)  # the URL and the final record come from the read model
            # A locked or full database delays the outbox, never ends the sender (recording is idempotent).
            owed = await until_stored(
                None, "log", lambda batch=batch: anyio.to_thread.run_sync(self.outbox.record_ended, batch, self.url_of)
            )
            for delivery in owed:
                self.task_group.start_soon(self._deliver, delivery)

    async def _deliver(self, delivery: Delivery) -> None:
        task_id, url = delivery.task_id, delivery.url
        record = await self.load_record(task_id)
        body = await self.shape_body(task_id, record) if record is not None else {"task_id": task_id}
        headers = {"User-Agent": f"fooocus-es/{__version__}", "X-Fooocus-Task-Id": task_id}
        first, last = delivery.attempts + 1, delivery.attempts + self.retries + 1
        async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=True) as client:
            for attempt in range(first, last + 1):
                status: int | None = None
                try:
                    response = await client.post(url, json=body, headers=headers)
                    status = response.status_code
                    error = None if status < 300 else f"HTTP {status}"
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"
                state = "delivered" if error is None else ("failed" if attempt == last else "pending")
                note = partial(self.outbox.attempted, delivery.seq, attempt, status, error, state)
                await until_stored(None, "log", lambda note=note: anyio.to_thread.run_sync(note))
                if error is None:
                    log.info("webhook.delivered", task_id=task_id, url=url, attempt=attempt)
                    return
                log.warning("webhook.failed", task_id=task_id, url=url, attempt=attempt, reason=error)
                if attempt < last:
                    await anyio.sleep(self.backoff_s * 2 ** (attempt - first))
        log.error("webhook.gave_up", task_id=task_id, url=url, attempts=attempt)


def _ends(envelope: Envelope) -> bool:
    return is_terminal(envelope.event)
