"""Fleet processes for the tests and the bench: `fooocus-es runner` over its own data dir."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT, ServerProcess


class RunnerProcess(ServerProcess):
    """`python -m fooocus_es runner` over its own data dir (models symlinked in, as ServerProcess;
    kill and stop are ServerProcess's)."""

    def __init__(self, data_dir: Path, models: Path, nats_url: str) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        if not (data_dir / "models").exists():
            (data_dir / "models").symlink_to(models, target_is_directory=True)
        self.log_path = data_dir / "runner.log"
        self.command = [
            sys.executable, "-m", "fooocus_es", "runner", "--log", nats_url, "--data-dir", str(data_dir),
            "--preset", "demo", "--device", "cpu", "--ack-wait", "2",
        ]  # fmt: skip
        self.env = {**os.environ, "FOOOCUS_ES_DOWNLOAD_MODELS": "false", "FOOOCUS_ES_TORCH_THREADS": "1"}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120) -> RunnerProcess:
        self.log_file = self.log_path.open("ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            self.command, stdout=self.log_file, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"runner exited:\n{self.log_path.read_text()[-4000:]}")
            if "runner.started" in self.log_path.read_text(errors="replace"):
                return self
            time.sleep(0.2)
        raise RuntimeError(f"runner did not start:\n{self.log_path.read_text()[-4000:]}")
