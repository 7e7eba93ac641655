"""Which API node of a fleet sends a task's webhook: the first to claim it in a KV bucket.

Every node follows the same log, so every node sees each task end; `kv.create` is a
compare-and-set on an absent key, so exactly one node's claim succeeds. The node id is kept in
the data dir, so a restarted node finds its own claims again and resumes their deliveries from its
outbox (a node that never comes back leaves the webhooks it claimed but had not sent).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Final

from nats.js import api
from nats.js.errors import KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from fooocus_es.fleet.connection import NatsThread

BUCKET: Final = "fes-webhooks"


class WebhookClaims:
    def __init__(self, nats: NatsThread, data_dir: Path, bucket: str = BUCKET, *, replicas: int = 1) -> None:
        self.nats = nats
        self.node_id = _node_id(data_dir)
        self.bucket = bucket
        self.replicas = replicas
        self._kv: KeyValue = nats.call(self._open())

    async def _open(self) -> KeyValue:
        config = api.KeyValueConfig(bucket=self.bucket, history=1, storage=api.StorageType.FILE, ttl=30 * 86400,
                                    replicas=self.replicas)  # fmt: skip
        return await self.nats.key_value(config)

    def claim(self, task_id: str) -> bool:
        """Worker thread: True when this node sends the task's webhook."""
        return self.nats.call(self._claim(task_id))

    async def _claim(self, task_id: str) -> bool:
        try:
            await self._kv.create(task_id, self.node_id.encode())
            return True
        except KeyWrongLastSequenceError:
            try:
                entry = await self._kv.get(task_id)
            except NotFoundError:
                return False
            return (entry.value or b"").decode() == self.node_id  # ours, from before a restart


def _node_id(data_dir: Path) -> str:
    path = data_dir / "node_id"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(uuid.uuid4().hex)
    return path.read_text().strip()
