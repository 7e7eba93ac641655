"""The generate_record read model in PostgreSQL, one table shared by several API nodes.

Each node follows the same log and applies every batch; `apply` locks the position row (SELECT ...
FOR UPDATE) in its transaction and skips what is at or below it, so when two nodes apply the same
events at once one writes them and the other finds them done: one row per task, the same rows one
node's SQLite gets (record_changes decides every change for both). Connections come from a small
pool (autocommit: a query is its own snapshot; writes open a transaction); a streamed range has a
connection of its own, as SQLite's does, so a slow client never holds a pooled one.

PostgreSQL being away is ReadModelUnavailable (a ConnectionError): the follower retries its batch
and the API answers 503, as for the fleet's NATS.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import psycopg
from psycopg_pool import ConnectionPool

from fooocus_es.events.log import EventLog, pages
from fooocus_es.events.sqlite import default_migrations_dir
from fooocus_es.events.types import Envelope, TaskProgress, TasksDeleted
from fooocus_es.projections.record_changes import Current, change_for, rows_after, statement
from fooocus_es.projections.records import COLUMNS, POSITION, ReadModelUnavailable, catch_up, redacted, row_to_dict

_SELECT = f"SELECT {', '.join(COLUMNS)} FROM generate_record"
# The current rows of a batch's tasks, in one query (record_changes.CURRENT_SQL's columns).
_CURRENT_ROWS = (
    "SELECT task_id, task_status, finish_mills IS NOT NULL, notes FROM generate_record WHERE task_id = ANY(%s)"
)
_ENDED = "finish_mills IS NOT NULL"  # ended is finish_mills, not a status: `skip` is also a running task's
# Connections per node: the follower's writes plus a few concurrent queries. Nodes share one
# server's max_connections (100 by default), so this stays small.
POOL_SIZE: Final = 8
CONNECT_TIMEOUT_S: Final = 10.0
# How long a query waits for a pooled connection: all busy, or the server away (then a 503 after it).
POOL_WAIT_S: Final = 3.0
# Serialises migrations across nodes starting at once (an arbitrary key of this project's).
_MIGRATION_LOCK: Final = 0x666F6F6F  # "fooo"


def default_postgres_migrations_dir() -> Path:
    return default_migrations_dir() / "postgresql"


class PostgresReadModel:
    def __init__(self, url: str, *, pool_size: int = POOL_SIZE, migrations_dir: Path | None = None) -> None:
        self.url = url
        self._pool = ConnectionPool(
            url, min_size=1, max_size=pool_size, kwargs={"autocommit": True}, open=False,
            check=ConnectionPool.check_connection, timeout=POOL_WAIT_S, name="read-model",
        )  # fmt: skip
        with self._reachable():
            # One connection of its own first: a server that refuses it fails the start at once, in
            # libpq's words (the pool would retry until its timeout, then say only that).
            with self._connect() as conn:
                migrate(conn, migrations_dir or default_postgres_migrations_dir())
            try:
                self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
            except BaseException:
                self._pool.close()  # its connecting threads too
                raise

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT_S))

    @contextlib.contextmanager
    def _reachable(self) -> Iterator[None]:
        try:
            yield
        except psycopg.OperationalError as exc:  # the server is away, refused us, or timed out (PoolTimeout too)
            raise ReadModelUnavailable(f"the read model {redacted(self.url)} is unreachable: {exc}") from exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[Any]]:
        with self._reachable(), self._pool.connection() as conn, conn.transaction():
            yield conn

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._reachable(), self._pool.connection() as conn:
            return conn.execute(sql, params).fetchall()

    # -- the writer -----------------------------------------------------------------------------
    def position(self) -> int:
        rows = self._rows("SELECT seq FROM consumer_positions WHERE name = %s", (POSITION,))
        return int(rows[0][0]) if rows else 0

    def apply(self, envelopes: Sequence[Envelope]) -> None:
        """Apply events after the position; another node's transaction on the same events waits for
        this one's position row, then finds them at or below the position and skips them."""
        with self._transaction() as conn:
            done = _locked_position(conn)
            fresh = [envelope for envelope in envelopes if envelope.seq > done]
            if fresh:
                _apply(conn, fresh, fresh[-1].seq)

    def catch_up(self, log: EventLog) -> int:
        return catch_up(self, log)

    def rebuild(self, log: EventLog) -> int:
        """Empty the table and apply the whole log, in one transaction (other nodes' applies wait)."""
        with self._transaction() as conn:
            _locked_position(conn)
            conn.execute("DELETE FROM generate_record")
            count = 0
            for page in pages(log.read()):
                _apply(conn, page, page[-1].seq)
                count += len(page)
            _set_position(conn, log.last_seq())
        return count

    def close(self) -> None:
        self._pool.close()

    # -- queries --------------------------------------------------------------------------------
    def get(self, task_id: str) -> dict[str, Any] | None:
        rows = self._rows(f"{_SELECT} WHERE task_id = %s", (task_id,))
        return row_to_dict(rows[0]) if rows else None

    def history(self, *, page: int, page_size: int, before_id: int | None = None) -> list[dict[str, Any]]:
        """One page of ended tasks, newest first: by keyset cursor, or skipping `page * page_size`
        entries of the partial index generate_record_ended (an index-only scan), never rows."""
        if before_id is not None:
            rows = self._rows(f"{_SELECT} WHERE {_ENDED} AND id < %s ORDER BY id DESC LIMIT %s", (before_id, page_size))
        else:
            rows = self._rows(
                f"{_SELECT} WHERE id IN (SELECT id FROM generate_record WHERE {_ENDED}"
                " ORDER BY id DESC LIMIT %s OFFSET %s) ORDER BY id DESC",
                (page_size, page * page_size),
            )
        return [row_to_dict(row) for row in rows]

    def history_in_range(self, start_ms: int, end_ms: int, batch: int = 200) -> Iterator[list[dict[str, Any]]]:
        """Every ended task queued in [start_ms, end_ms], newest first, `batch` rows at a time: a
        server-side cursor in one transaction on a connection of its own (batches may be pulled
        from different threads one after another, never from two at once)."""
        sql = f"{_SELECT} WHERE {_ENDED} AND in_queue_mills BETWEEN %s AND %s ORDER BY id DESC"
        with (
            self._reachable(),
            self._connect() as conn,
            conn.transaction(),
            conn.cursor(name="history_in_range") as cursor,
        ):
            cursor.execute(sql, (start_ms, end_ms))
            while rows := cursor.fetchmany(batch):
                yield [row_to_dict(row) for row in rows]

    def ended_in_range(self, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        sql = f"{_SELECT} WHERE {_ENDED} AND in_queue_mills BETWEEN %s AND %s ORDER BY id DESC"
        return [row_to_dict(row) for row in self._rows(sql, (start_ms, end_ms))]

    def all_rows(self) -> list[tuple[Any, ...]]:
        return self._rows(f"{_SELECT} ORDER BY id")

    def unfinished(self) -> list[dict[str, Any]]:
        return [row_to_dict(row) for row in self._rows(f"{_SELECT} WHERE finish_mills IS NULL ORDER BY id")]

    def ended_count(self) -> int:
        return int(self._rows(f"SELECT COUNT(*) FROM generate_record WHERE {_ENDED}")[0][0])

    def last_task_id(self) -> str | None:
        rows = self._rows("SELECT task_id FROM generate_record ORDER BY id DESC LIMIT 1")
        return rows[0][0] if rows else None


def _locked_position(conn: psycopg.Connection[Any]) -> int:
    """The position, its row locked until the transaction ends (the row is made if it is missing)."""
    lock = "SELECT seq FROM consumer_positions WHERE name = %s FOR UPDATE"
    row = conn.execute(lock, (POSITION,)).fetchone()
    if row is None:  # the migration makes it; a table emptied by hand gets it back
        conn.execute("INSERT INTO consumer_positions (name, seq) VALUES (%s, 0) ON CONFLICT DO NOTHING", (POSITION,))
        row = conn.execute(lock, (POSITION,)).fetchone()
    assert row is not None
    return int(row[0])


_SET_POSITION = "UPDATE consumer_positions SET seq = %s WHERE name = %s"


def _set_position(conn: psycopg.Connection[Any], seq: int) -> None:
    conn.execute(_SET_POSITION, (seq, POSITION))


def _apply(conn: psycopg.Connection[Any], envelopes: Sequence[Envelope], position: int) -> None:
    """A batch of events and the position it reaches, inside the caller's transaction: the batch's
    rows are read in one query, record_changes decides each change (moving those rows on), and the
    statements go to the server in one pipeline (a round trip per batch, not two per event)."""
    task_ids = [e.event.task_id for e in envelopes if not isinstance(e.event, (TaskProgress, TasksDeleted))]
    rows: dict[str, Current | None] = {}
    if task_ids:
        for task_id, status, ended, notes in conn.execute(_CURRENT_ROWS, (list(set(task_ids)),)):
            rows[task_id] = Current(status, bool(ended), notes)
    statements = []
    for envelope in envelopes:
        change = change_for(envelope.seq, envelope.event, rows.get)
        if change is not None:
            rows_after(rows, change)
            statements.append(statement(change, "%s"))
    with conn.pipeline(), conn.cursor() as cursor:
        for sql, params_rows in statements:
            for params in params_rows:
                cursor.execute(sql, params)
        cursor.execute(_SET_POSITION, (position, POSITION))


def migrate(conn: psycopg.Connection[Any], folder: Path) -> int:
    """Apply NNNN_*.sql files above schema_version's, in one transaction under an advisory lock
    (API nodes starting together migrate one at a time; the later ones find nothing to do)."""
    files = sorted(folder.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    if not files:  # a broken install must not start on an empty schema
        raise FileNotFoundError(f"no migration files in {folder}")
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        current = int(row[0]) if row else 0
        if row is None:
            conn.execute("INSERT INTO schema_version (version) VALUES (0)")
        for path in files:
            number = int(path.name[:4])
            if number <= current:
                continue
            conn.execute(path.read_text().encode())  # no parameters: the file's statements run as one script
            conn.execute("UPDATE schema_version SET version = %s", (number,))
            current = number
    return current
