"""Which event log, command queue and blob store a process uses: SQLite and local files on one
machine, NATS JetStream in a fleet (`--log nats://HOST:PORT`). Everything above them is the same."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fooocus_es.events.log import EventLog
from fooocus_es.media.blobs import BlobStore, LocalBlobs
from fooocus_es.runner.queue import CommandQueue, LocalCommandQueue
from fooocus_es.settings import Settings

if TYPE_CHECKING:
    from fooocus_es.fleet.connection import NatsThread


@dataclass
class Backends:
    event_log: EventLog
    commands: CommandQueue
    blobs: BlobStore
    nats: NatsThread | None  # the fleet's connection for control and presence (None on one machine)

    def close(self) -> None:
        for part in (self.commands, self.blobs, self.event_log):
            close = getattr(part, "close", None)
            if close is not None:
                close()


def open_backends(settings: Settings) -> Backends:
    if not settings.fleet:
        from fooocus_es.events.sqlite import SqliteEventLog

        event_log = SqliteEventLog(settings.db_path, busy_timeout_s=settings.db_busy_timeout_s)
        return Backends(event_log, LocalCommandQueue(), LocalBlobs(settings.data_dir), None)
    from fooocus_es.events.jetstream import JetStreamEventLog
    from fooocus_es.media.object_store import ObjectStoreBlobs
    from fooocus_es.runner.jetstream_queue import JetStreamCommandQueue

    # Every stream and bucket this node creates gets the same replica count (3 on a 3-node cluster);
    # presence and webhook claims take it from the settings where they are made.
    replicas = settings.replicas
    event_log = JetStreamEventLog(settings.log_url, replicas=replicas)
    # Deliveries, not runs: the runner counts runs in the log and fails a task past
    # --retry-interrupted; the margin covers deliveries lost to expiring pull requests.
    commands = JetStreamCommandQueue(settings.log_url, pool=settings.pool, ack_wait_s=settings.ack_wait_s,
                                     max_deliver=settings.retry_interrupted + 5, replicas=replicas)  # fmt: skip
    # The data dir is the blob cache, laid out as on one machine: the engine finds inputs where it looks.
    blobs = ObjectStoreBlobs(settings.log_url, cache_dir=settings.data_dir, replicas=replicas)
    return Backends(event_log, commands, blobs, event_log.nats)
