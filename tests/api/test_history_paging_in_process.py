"""History pages: page numbers, the keyset `Link` cursor, and the streamed time range, on the real app,
over each read model: SQLite in the data dir and a shared PostgreSQL (--read-model)."""

from __future__ import annotations

import time
from datetime import datetime
from urllib.parse import urlsplit

import pytest
from litestar.testing import TestClient

from .api_helpers import submit, wait_for
from .conftest import ClientFactory


@pytest.fixture(params=["sqlite", "postgresql"])
def client(request: pytest.FixtureRequest, make_client: ClientFactory) -> TestClient:
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else ""
    return make_client(read_model_url=url)


def _ended(client: TestClient, count: int) -> list[str]:
    ids = [submit(client, {"prompt": f"p{i}", "image_seed": i})["task_id"] for i in range(count)]
    for task_id in ids:
        wait_for(client, task_id)
    return ids[::-1]  # newest first, as history lists them


def test_pages_and_the_keyset_cursor_list_the_same_tasks(client: TestClient) -> None:
    newest_first = _ended(client, 5)
    def page(n: int) -> list[str]:
        body = client.get("/tasks", params={"query": "history", "page": n, "page_size": 2}).json()
        return [r["task_id"] for r in body["history"]]

    by_page = [page(n) for n in range(3)]
    assert by_page == [newest_first[0:2], newest_first[2:4], newest_first[4:5]]

    followed, url = [], "/tasks?query=history&page_size=2"
    while url:
        response = client.get(url)
        assert response.status_code == 200
        followed.append([r["task_id"] for r in response.json()["history"]])
        link = response.headers.get("link")
        target = urlsplit(link[1 : link.index(">")]) if link else None
        url = f"{target.path}?{target.query}" if target else ""
    assert followed == by_page  # a full page links to the next; the short last page links nowhere
    assert "before=" in client.get("/tasks?query=history&page_size=2").headers["link"]
    bad = client.get("/tasks", params={"before": 0})
    assert bad.status_code == 400 and "before" in bad.text


def test_a_time_range_streams_every_record_in_it_as_one_json_document(client: TestClient) -> None:
    start = datetime.fromtimestamp(time.time() - 5).isoformat(timespec="seconds")
    newest_first = _ended(client, 3)
    end = datetime.fromtimestamp(time.time() + 5).isoformat(timespec="seconds")
    response = client.get("/tasks", params={"start_at": start, "end_at": end})
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"history", "current", "pending"}
    assert [r["task_id"] for r in body["history"]] == newest_first
    single = client.get(f"/tasks/{newest_first[0]}").json()
    assert body["history"][0] == single  # each streamed record is the record /tasks/{id} renders
    future = datetime.fromtimestamp(time.time() + 60).isoformat(timespec="seconds")
    empty = client.get("/tasks", params={"start_at": end, "end_at": future}).json()
    assert empty == {"history": [], "current": [], "pending": []}
