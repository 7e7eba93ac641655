"""In-process API tests: the real app (real SQLite log, real files, the app's lifespan) on Litestar's
TestClient, with a fake engine passed through create_app so no torch model is built or run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from fooocus_es.app import create_app
from fooocus_es.settings import settings_from_env

from .fake_engine import FakeEngine

ClientFactory = Callable[..., TestClient]


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def make_client(tmp_path: Path, engine: FakeEngine) -> Iterator[ClientFactory]:
    """A started app per call (settings overridable); each is shut down after the test."""
    opened: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        defaults: dict[str, Any] = dict(
            data_dir=tmp_path / f"data{len(opened)}", preset="demo", device="cpu", download_models=False,
            allowed_hosts="testserver.local",  # TestClient's Host (the DNS-rebinding check serves only known names)
        )  # fmt: skip
        settings = settings_from_env({}, **{**defaults, **overrides})
        client = TestClient(create_app(settings, engine_factory=FakeEngine.factory(engine)), timeout=30)
        client.__enter__()  # runs the lifespan: recovery, runner thread, webhooks
        opened.append(client)
        return client

    yield make
    engine.release()  # a held engine would keep the runner from shutting down
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: ClientFactory) -> TestClient:
    return make_client()
