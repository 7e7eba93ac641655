"""Admitting a task, shared by the native and the OpenAI-compatible endpoints.

validate_and_store: the webhook URL and names checked, queue capacity checked, input images stored
under inputs/.
enqueue: TaskQueued made durable (with the waiter and optional stream subscription registered
first, so nothing of the task can be missed), then the runner is told.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import anyio.to_thread
import msgspec
import structlog

from fooocus_es.api.errors import TooManyRequests
from fooocus_es.api.inputs import store_request_images
from fooocus_es.engine.imaging.inputs import check_inpaint_mask
from fooocus_es.engine.planning import plan as planning
from fooocus_es.events.bus import Subscription
from fooocus_es.events.types import TaskQueued, now_ms
from fooocus_es.media.limits import ImageLimits
from fooocus_es.media.own_files import OwnFiles
from fooocus_es.net import address_guard
from fooocus_es.services import Services


@dataclass
class Admitted:
    task_id: str
    params: dict[str, Any]
    at_ms: int
    ended: anyio.Event  # set by the task's terminal event
    subscription: Subscription | None  # the task's live events, when a stream asked for them


def check_capacity(services: Services) -> None:
    if services.live.depth >= services.settings.queue_size:
        raise TooManyRequests(
            detail=f"the queue is full ({services.settings.queue_size} tasks pending); retry later",
            headers={"Retry-After": "10"},
        )


def check_webhook_url(url: object) -> None:
    """http(s) with a valid host, or nothing; which addresses it may reach is decided at delivery."""
    if not url:
        return
    try:
        address_guard.parse_http_url(str(url))
    except address_guard.RefusedURL as exc:
        raise planning.ParamError("webhook_url", str(exc)) from exc


async def validate_and_store(services: Services, params: dict[str, Any], sent: dict[str, Any]) -> dict[str, Any]:
    """The finalized params, with every image field replaced by its inputs/ path."""
    check_webhook_url(params.get("webhook_url"))
    names = await anyio.to_thread.run_sync(services.installed_names)
    downloadable = services.catalog.fetchable("checkpoints")
    planning.validate_names(params, downloadable=downloadable, sent=sent, **msgspec.structs.asdict(names))
    check_capacity(services)
    limits = ImageLimits(allow_private_fetch=services.settings.allow_private_fetch)
    # This server's own result/input URLs (chained tasks) are read from the data dir, not fetched.
    store = partial(store_request_images, own_files=OwnFiles.from_settings(services.settings))
    stored = await anyio.to_thread.run_sync(store, params, services.blobs, limits)
    await anyio.to_thread.run_sync(check_inpaint_mask, stored, services.settings.data_dir)
    check_capacity(services)  # the images took time; the queue may have filled meanwhile
    return stored


async def enqueue(
    services: Services, params: dict[str, Any], *, stream: bool, notes: list[str] | None = None, wire: str = ""
) -> Admitted:
    task_id = uuid.uuid4().hex
    structlog.contextvars.bind_contextvars(task_id=task_id)
    webhook_url = params.get("webhook_url") or services.settings.webhook_url
    ended = services.waiters.expect(task_id)
    subscription = services.bus.subscribe(task_id, maxsize=64) if stream else None
    at_ms = now_ms()
    try:
        await services.store.emit_async(
            TaskQueued(
                task_id=task_id, at_ms=at_ms, params=params, webhook_url=webhook_url, notes=notes or [], wire=wire
            ),
            expected_version=0,  # a new task: its id must not be in the log yet
        )
    except BaseException:
        services.waiters.discard(task_id)
        if subscription is not None:
            services.bus.unsubscribe(subscription)
        raise
    services.submit(task_id, params)
    return Admitted(task_id, params, at_ms, ended, subscription)
