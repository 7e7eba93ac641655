"""The restart rule, applied once at start-up to the tasks the log has not ended."""

from __future__ import annotations

import contextlib
from typing import Any

import anyio.to_thread
import structlog

from fooocus_es.events.log import AppendRefused, EventLog
from fooocus_es.events.store import EventStore
from fooocus_es.events.types import TaskFailed, now_ms
from fooocus_es.runner.queue import CommandQueue
from fooocus_es.tasks.commands import Generate

log = structlog.get_logger("fooocus_es")


async def recover(
    unfinished: list[dict[str, Any]],
    *,
    commands: CommandQueue,
    event_log: EventLog,
    store: EventStore,
    fail_started: bool = True,
) -> None:
    """Queued-but-not-started tasks are queued again; started-but-not-ended ones failed "interrupted"
    (`fail_started`: on one machine their runner was this process, so it is gone)."""
    for record in unfinished:
        task_id = record["task_id"]
        if record["start_mills"] is None:
            commands.put(Generate(task_id=task_id, params=record["req_params"]))
            continue
        if not fail_started:
            continue
        version = await anyio.to_thread.run_sync(event_log.version, task_id)
        failed = TaskFailed(task_id=task_id, at_ms=now_ms(), error_type="Interrupted", message="interrupted by restart")
        with contextlib.suppress(AppendRefused):  # another writer ended it meanwhile
            await store.emit_async(failed, expected_version=version)
    if unfinished:
        log.info("tasks.recovered", count=len(unfinished))
