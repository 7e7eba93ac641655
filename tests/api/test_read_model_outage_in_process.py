"""A shared PostgreSQL read model that goes away: history answers 503 with a reason, and the node
catches up by itself once the server is back (no restart of the app)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from postgres_server import PostgresServer

from .api_helpers import submit, wait_for
from .conftest import ClientFactory


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A cluster of this test's own (it is stopped mid-test); requested before make_client, so the
    app shuts down (a last catch-up) while the cluster is still there."""
    server = PostgresServer().start()
    yield server
    server.stop()


def test_history_is_a_503_while_postgresql_is_away_and_the_node_catches_up_after(
    own_postgres: PostgresServer, make_client: ClientFactory
) -> None:
    client = make_client(read_model_url=own_postgres.new_database())
    before = wait_for(client, submit(client, {"prompt": "before"})["task_id"])["task_id"]
    own_postgres.halt()
    away = client.get("/tasks", params={"query": "history"})
    assert away.status_code == 503 and away.headers["retry-after"] and "unreachable" in away.text, away.text
    own_postgres.start()
    deadline = time.monotonic() + 20
    while (back := client.get("/tasks", params={"query": "history"})).status_code != 200:
        assert time.monotonic() < deadline, back.text
        time.sleep(0.2)
    after = wait_for(client, submit(client, {"prompt": "after"})["task_id"])["task_id"]
    history = client.get("/tasks", params={"query": "history"}).json()["history"]
    assert [row["task_id"] for row in history] == [after, before]
