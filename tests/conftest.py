"""Shared fixtures: the demo checkpoint (built once per session) and real server processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models/ folder holding the tiny demo checkpoint, generated once for the whole run."""
    from fooocus_es.engine.demo.checkpoint import ensure_demo_checkpoint

    models = tmp_path_factory.mktemp("models")
    ensure_demo_checkpoint(models / "checkpoints")
    return models


@pytest.fixture(scope="session")
def nats_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """nats-servers for the session, started on first use: kind ("debian", "current") -> URL.
    Each test uses streams and subjects of its own on them."""
    from nats_server import NatsServer

    started: dict[str, NatsServer] = {}

    class Urls(dict[str, str]):
        def __missing__(self, kind: str) -> str:
            started[kind] = NatsServer(tmp_path_factory.mktemp(f"nats-{kind}"), kind).start()
            self[kind] = started[kind].url
            return self[kind]

    yield Urls()
    for server in started.values():
        server.stop()


@pytest.fixture
def nats_url(nats_servers: dict[str, str]) -> str:
    """Debian's nats-server (2.9.10), the build the fleet runs on in these tests."""
    return nats_servers["debian"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator:
    """A throwaway PostgreSQL cluster for the session, started on first use (tests/postgres_server.py);
    one that cannot start fails the tests that asked for it, with the reason."""
    from postgres_server import PostgresServer

    server = PostgresServer()
    try:
        server.start()
    except RuntimeError as exc:
        server.stop()
        pytest.fail(f"PostgreSQL did not start: {exc}")
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh database of the session's cluster: postgresql://postgres@127.0.0.1:PORT/test_N."""
    return postgres_server.new_database()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`python -m fooocus_es serve` on a free loopback port, over a real data dir."""

    def __init__(self, data_dir: Path, models: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.args = args
        self.env = {**os.environ, "FOOOCUS_ES_DOWNLOAD_MODELS": "false", "FOOOCUS_ES_TORCH_THREADS": "1", **(env or {})}
        self.log_path = data_dir / f"server-{self.port}.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        if not (data_dir / "models").exists():
            (data_dir / "models").symlink_to(models, target_is_directory=True)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> ServerProcess:
        command = [
            sys.executable,
            "-m",
            "fooocus_es",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--preset",
            "demo",
            *self.args,
        ]
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, stdout=self.log_file, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()[-4000:]}")
            try:
                requests.get(self.url + "/health", timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.2)
        raise RuntimeError(f"server did not start:\n{self.log_path.read_text()[-4000:]}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if hasattr(self, "log_file"):
            self.log_file.close()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def make_server(tmp_path: Path, demo_models: Path) -> Iterator:
    started: list[ServerProcess] = []

    def make(*args: str, data_dir: Path | None = None, env: dict[str, str] | None = None) -> ServerProcess:
        server = ServerProcess(data_dir or tmp_path / f"data{len(started)}", demo_models, *args, env=env)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, demo_models: Path) -> Iterator[ServerProcess]:
    """One server shared by the tests that do not need a fresh one (image URLs and webhooks to loopback allowed)."""
    env = {"FOOOCUS_ES_ALLOW_PRIVATE_FETCH": "true", "FOOOCUS_ES_ALLOW_PRIVATE_WEBHOOKS": "true"}
    process = ServerProcess(tmp_path_factory.mktemp("shared-data"), demo_models, env=env)
    process.start()
    yield process
    process.stop()
