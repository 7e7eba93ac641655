"""Webhook delivery: when a task ends, POST its final record (a JSON object) to the task's URL.

A positioned consumer of the log that survives crashes: it follows the log from the outbox's
position, records each webhook owed in the outbox (with the position, in one transaction), then
delivers it as its own task with retries and exponential backoff, recording every attempt. On
start it catches up from the position and retries what was not delivered, so a webhook owed when
the server was killed or the receiver was down is delivered after restart. A receiver may see a
webhook twice only if the server dies between the receiver's 2xx and writing it down.

Every attempt passes the image URLs' SSRF guard (net/address_guard.py) and goes to the checked
address; a refused address is a permanent failure ("refused"), a redirect a failed attempt (never
followed). Bodies are signed when the server has a webhook secret (webhook_signature.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import anyio.to_thread
import httpx
import msgspec
import structlog
from anyio.abc import TaskGroup, TaskStatus

from fooocus_es import __version__
from fooocus_es.events.log import EventLog, pages
from fooocus_es.events.types import Envelope, is_terminal, now_ms
from fooocus_es.net import address_guard
from fooocus_es.ops.storage import until_stored
from fooocus_es.subscribers.webhook_outbox import Delivery, WebhookOutbox
from fooocus_es.subscribers.webhook_signature import signature_headers

log = structlog.get_logger("fooocus_es.webhooks")

RecordLoader = Callable[[str], Awaitable[dict[str, Any] | None]]
# The body to POST for a final record: the record itself unless the task's wire has its own shape.
BodyShaper = Callable[[str, dict[str, Any]], Awaitable[Any]]
RETRY_FOR_MS = 24 * 3600 * 1000  # webhooks owed for longer than this are not retried at start


async def record_as_body(_task_id: str, record: dict[str, Any]) -> Any:
    return record


class Outcome(msgspec.Struct, frozen=True):
    """What one delivery attempt came to."""

    status: int | None  # the receiver's HTTP status; None when none answered
    error: str | None  # None: delivered
    refused: bool = False  # the address or URL is not allowed: a permanent failure, not retried


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
    allow_private: bool = False  # loopback/private/link-local/multicast receivers allowed
    secret: str = ""  # signs every delivery (webhook_signature.py); empty: unsigned

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        if not self.secret:
            log.info("webhooks.unsigned", hint="set FOOOCUS_ES_WEBHOOK_SECRET to sign webhook deliveries")
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

    async def _note(self, seq: int, attempt: int, status: int | None, error: str | None, state: str) -> None:
        """Write an attempt down; a storage error is retried, never ends the task group."""
        note = partial(self.outbox.attempted, seq, attempt, status, error, state)
        await until_stored(None, "log", lambda: anyio.to_thread.run_sync(note))

    async def _deliver(self, delivery: Delivery) -> None:
        task_id, url = delivery.task_id, delivery.url
        record = await self.load_record(task_id)
        body = await self.shape_body(task_id, record) if record is not None else {"task_id": task_id}
        content = msgspec.json.encode(body)  # encoded once: the signature covers these exact bytes
        first, last = delivery.attempts + 1, delivery.attempts + self.retries + 1
        # No redirects (a 3xx would re-POST the body to wherever it points, past the guard) and no
        # proxy from the environment (it would connect for us, to any address).
        async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False, trust_env=False) as client:
            for attempt in range(first, last + 1):
                outcome = await post_once(
                    client, url, content, task_id=task_id, allow_private=self.allow_private, secret=self.secret
                )
                if outcome.refused:
                    await self._note(delivery.seq, attempt, None, outcome.error, "refused")
                    log.warning("webhook.refused", task_id=task_id, url=url, reason=outcome.error)
                    return
                state = "delivered" if outcome.error is None else ("failed" if attempt == last else "pending")
                await self._note(delivery.seq, attempt, outcome.status, outcome.error, state)
                if outcome.error is None:
                    log.info("webhook.delivered", task_id=task_id, url=url, attempt=attempt)
                    return
                log.warning("webhook.failed", task_id=task_id, url=url, attempt=attempt, reason=outcome.error)
                if attempt < last:
                    await anyio.sleep(self.backoff_s * 2 ** (attempt - first))
        log.error("webhook.gave_up", task_id=task_id, url=url, attempts=attempt)


async def post_once(
    client: httpx.AsyncClient, url: str, content: bytes, *, task_id: str, allow_private: bool, secret: str
) -> Outcome:
    """One attempt: the URL and its addresses checked now (DNS may have changed), then one POST to
    a checked address (never re-resolved by the client), signed at this attempt's time."""
    try:
        parsed = address_guard.parse_http_url(url)
        addresses = await anyio.to_thread.run_sync(
            partial(address_guard.checked_addresses, parsed, allow_private=allow_private)
        )
    except address_guard.UnresolvedHost as exc:
        return Outcome(None, str(exc))  # DNS may answer on the next attempt
    except address_guard.BlockedAddress as exc:
        return Outcome(None, f"refused: {exc}; webhooks to it need --allow-private-webhooks", refused=True)
    except address_guard.RefusedURL as exc:  # a URL stored before admission checked URLs
        return Outcome(None, f"refused: {exc}", refused=True)
    headers = {
        "User-Agent": f"fooocus-es/{__version__}",
        "Content-Type": "application/json",
        "X-Fooocus-Task-Id": task_id,
        **signature_headers(secret, now_ms() // 1000, content),
    }
    failure: httpx.HTTPError | None = None
    for address in addresses:
        request = address_guard.pinned_request(client, "POST", parsed, address, content=content, headers=headers)
        try:
            response = await client.send(request, stream=True)  # the receiver's body is not read
        except httpx.ConnectError as exc:  # e.g. an unreachable IPv6 address: try the next one
            failure = exc
            continue
        except httpx.HTTPError as exc:
            return Outcome(None, f"{type(exc).__name__}: {exc}")
        await response.aclose()
        status = response.status_code
        if 300 <= status < 400:
            location = response.headers.get("location", "")
            return Outcome(status, f"HTTP {status}: redirect to {location!r} not followed")
        return Outcome(status, None if status < 300 else f"HTTP {status}")
    return Outcome(None, f"{type(failure).__name__}: {failure}")


def _ends(envelope: Envelope) -> bool:
    return is_terminal(envelope.event)
