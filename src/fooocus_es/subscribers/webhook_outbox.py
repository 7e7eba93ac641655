"""The webhook outbox in SQLite: which ended tasks owe a webhook, how far the log was read for it,
and every delivery attempt.

Rows and the consumer position are written in one transaction, so after a crash the sender
resumes from the position and finds every webhook owed, delivered or not. A row's state is
pending until a receiver answers 2xx (delivered) or a round of retries runs out (failed); rows
that failed get a new round when the server starts again. A URL the address guard refused is
"refused" for good: retrying cannot change the answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from fooocus_es.events.sqlite import BUSY_TIMEOUT_S, connect, default_migrations_dir, migrate
from fooocus_es.events.types import Envelope, is_terminal, now_ms
from fooocus_es.projections.records import position_of, set_position

POSITION = "webhooks"


class Delivery(msgspec.Struct, frozen=True):
    seq: int  # the terminal event's seq
    task_id: str
    url: str
    attempts: int = 0


class WebhookAttempt(msgspec.Struct, frozen=True):
    attempt: int
    at_ms: int
    status_code: int | None
    error: str | None


class WebhookOutbox:
    def __init__(self, path: Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = connect(path, busy_timeout_s=busy_timeout_s)
        # Its tables are the data dir's migrations: applied by whichever opens the file first. In a
        # fleet with a PostgreSQL read model nothing else here opens it (the log is on NATS).
        migrate(self._db, default_migrations_dir())
        self._lock = threading.Lock()

    def position(self) -> int:
        with self._lock:
            return position_of(self._db, POSITION)

    def record_ended(self, batch: Sequence[Envelope], url_of: Callable[[str], str]) -> list[Delivery]:
        """Add a row per terminal event after the position whose task has a URL; move the position."""
        with self._lock, self._db.conn:
            self._db.conn.execute("BEGIN IMMEDIATE")
            done = position_of(self._db, POSITION)
            owed: list[Delivery] = []
            for envelope in batch:
                if envelope.seq <= done or not is_terminal(envelope.event):
                    continue
                url = url_of(envelope.event.task_id)
                if url:
                    owed.append(Delivery(envelope.seq, envelope.event.task_id, url))
            now = now_ms()
            self._db.conn.executemany(
                "INSERT OR IGNORE INTO webhook_deliveries (seq, task_id, url, state, created_ms, updated_ms)"
                " VALUES (?, ?, ?, 'pending', ?, ?)",
                [(d.seq, d.task_id, d.url, now, now) for d in owed],
            )
            if batch and batch[-1].seq > done:
                set_position(self._db, POSITION, batch[-1].seq)
        return owed

    def undelivered(self, newer_than_ms: int) -> list[Delivery]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, task_id, url, attempts FROM webhook_deliveries"
                " WHERE state NOT IN ('delivered', 'refused') AND created_ms >= ? ORDER BY seq",
                (newer_than_ms,),
            ).fetchall()
        return [Delivery(*row) for row in rows]

    def attempted(self, seq: int, attempt: int, status_code: int | None, error: str | None, state: str) -> None:
        now = now_ms()
        with self._lock, self._db.conn:
            self._db.conn.execute("BEGIN IMMEDIATE")
            self._db.conn.execute(
                "INSERT INTO webhook_attempts (seq, attempt, at_ms, status_code, error) VALUES (?, ?, ?, ?, ?)",
                (seq, attempt, now, status_code, error),
            )
            self._db.conn.execute(
                "UPDATE webhook_deliveries SET state = ?, attempts = ?, last_status = ?, last_error = ?,"
                " updated_ms = ? WHERE seq = ?",
                (state, attempt, status_code, error, now, seq),
            )

    def attempts_of(self, task_id: str) -> list[WebhookAttempt]:
        with self._lock:
            rows = self._db.execute(
                "SELECT a.attempt, a.at_ms, a.status_code, a.error FROM webhook_attempts a"
                " JOIN webhook_deliveries d ON d.seq = a.seq WHERE d.task_id = ? ORDER BY a.id",
                (task_id,),
            ).fetchall()
        return [WebhookAttempt(*row) for row in rows]

    def close(self) -> None:
        self._db.conn.close()
