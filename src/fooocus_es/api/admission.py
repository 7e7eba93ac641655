"""Admitting a task, shared by the native and the OpenAI-compatible endpoints.

queue_place: storage checked (503/507 while the log or the data dir cannot be written) and a place
in the queue taken atomically (429 when none is free), held around the two steps:
validate_and_store: the webhook URL and names checked, input images stored under inputs/ (within the decode budget).
enqueue: TaskQueued made durable (with the waiter and optional stream subscription registered
first, so nothing of the task can be missed), then the runner is told.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import msgspec
import structlog

from fooocus_es.api.errors import RETRY_QUEUE_S, StorageUnavailable, TooManyRequests
from fooocus_es.api.inputs import has_images, store_images, store_request_images
from fooocus_es.engine.imaging.inputs import check_inpaint_mask
from fooocus_es.engine.planning import plan as planning
from fooocus_es.events.bus import Subscription
from fooocus_es.events.types import TaskQueued, now_ms
from fooocus_es.media.decode import is_no_image
from fooocus_es.media.inputs import TOOL_IMAGE_FIELD
from fooocus_es.media.limits import ImageLimits
from fooocus_es.media.own_files import OwnFiles
from fooocus_es.net import address_guard
from fooocus_es.services import Services

T = TypeVar("T")


@dataclass
class Admitted:
    task_id: str
    params: dict[str, Any]
    at_ms: int
    ended: anyio.Event  # set by the task's terminal event
    subscription: Subscription | None  # the task's live events, when a stream asked for them


def check_storage(services: Services) -> None:
    fault = services.storage.first()
    if fault is not None:
        raise StorageUnavailable.of(fault)


@contextmanager
def queue_place(services: Services) -> Iterator[None]:
    """Enter on the event loop before any await: StorageUnavailable, TooManyRequests, or a held place."""
    check_storage(services)
    bound = services.queue_bound
    if not bound.take():
        detail = f"the queue is full ({bound.size} tasks pending); retry later"
        raise TooManyRequests(detail=detail, headers={"Retry-After": RETRY_QUEUE_S})
    try:
        yield
    finally:
        bound.release()


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
    names = await services.installed_names_now()
    downloadable = services.catalog.fetchable("checkpoints")
    planning.validate_names(params, downloadable=downloadable, sent=sent, **msgspec.structs.asdict(names))
    limits = ImageLimits(allow_private_fetch=services.settings.allow_private_fetch)
    # This server's own result/input URLs (chained tasks) are read from the data dir, not fetched.
    store = partial(
        store_request_images, own_files=OwnFiles.from_settings(services.settings), budget=services.decode_budget
    )
    if not has_images(params):  # most requests: nothing to fetch, decode or write, so no thread hop
        return store(params, services.blobs, limits)  # (it only blanks the "no image" markers)
    stored = await _store_off_loop(services, partial(store, params, services.blobs, limits))
    if stored.get("inpaint_input_image"):  # the mask check reads the stored files
        await anyio.to_thread.run_sync(check_inpaint_mask, stored, services.settings.data_dir)
    return stored


async def store_tool_image(services: Services, value: Any) -> str:
    """A tool's one image (the `image` field: base64, a data: URI or a URL) stored; its inputs/ key."""
    if value is None or is_no_image(value):
        raise planning.ParamError("image", "required: an image as base64, a data: URI or an http(s) URL")
    limits = ImageLimits(allow_private_fetch=services.settings.allow_private_fetch)
    store = partial(
        store_images, {TOOL_IMAGE_FIELD: value}, services.blobs, limits,
        own_files=OwnFiles.from_settings(services.settings), budget=services.decode_budget,
    )  # fmt: skip
    names = await _store_off_loop(services, store)
    return f"inputs/{names[TOOL_IMAGE_FIELD]}"


async def _store_off_loop(services: Services, store: Callable[[], T]) -> T:
    """Run a blocking image store; a data dir that cannot be written is a 503/507, not a 500."""
    try:
        # Own threads: requests waiting for a decode slot must not take the pool the log's appends use.
        return await anyio.to_thread.run_sync(store, limiter=services.image_threads())
    except OSError as exc:  # inputs/ cannot be written (full, read-only)
        fault = services.storage.report("inputs", exc)
        if fault is None:
            raise
        raise StorageUnavailable.of(fault) from exc


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
    except BaseException as exc:
        services.waiters.discard(task_id)
        if subscription is not None:
            services.bus.unsubscribe(subscription)
        fault = services.storage.report("log", exc) if isinstance(exc, Exception) else None
        if fault is not None:  # the log cannot be written: say so (and refuse others at once until it can)
            raise StorageUnavailable.of(fault) from exc
        raise
    services.storage.worked("log")
    services.submit(task_id, params)
    return Admitted(task_id, params, at_ms, ended, subscription)
