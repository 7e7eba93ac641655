"""Sessions tests, serve, lint, bench — all in ONE project virtualenv (.venv) so torch installs once.

nox has no shared-venv option, so the sessions are python=False and manage .venv themselves,
reinstalling only when pyproject.toml changes (a hash stamp in the venv).
"""

from __future__ import annotations

import glob
import hashlib
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["tests"]

ROOT = pathlib.Path(__file__).parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
# torch first and pinned with its torchvision (the CUDA 13 builds, which also run on the CPU), so that
# nothing installed later can pull another multi-GB build.
TORCH = ("torch==2.14.1", "torchvision==0.29.1")
CHROMIUM = "/usr/bin/chromium"
FUZZ_CONFIG = ROOT / "tests" / "fuzz" / "schemathesis.toml"
FUZZ_HOOKS = ROOT / "tests" / "fuzz" / "cheap_generation.py"
NATS_SERVER = "/usr/sbin/nats-server"  # Debian's package; it is not started as a service here
POSTGRES = "/usr/lib/postgresql/*/bin/initdb"  # Debian's postgresql-NN; the tests start throwaway clusters


def _venv(session: nox.Session) -> str:
    if not PYTHON.exists():
        base = getattr(sys, "_base_executable", None) or "python3"  # nox's own sys.executable is its venv
        session.run(base, "-m", "venv", str(VENV), external=True)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    stamp = VENV / ".deps.sha256"
    if not stamp.exists() or stamp.read_text() != digest:
        pip = [str(PYTHON), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        session.run(*pip, *TORCH, external=True)
        session.run(*pip, "-e", f"{ROOT}[test]", *TORCH, external=True)
        stamp.write_text(digest)
    session.env["VIRTUAL_ENV"] = str(VENV)
    session.env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{os.environ['PATH']}"
    return str(PYTHON)


def _debian_package(session: nox.Session, binary: str, package: str, why: str) -> None:
    """Install a Debian package the tests start (as root, with apt), or say how to; `binary` may be a glob."""
    if glob.glob(binary):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        session.run("apt-get", "update", "-qq", external=True)
        session.run("apt-get", "install", "-y", "-qq", package, external=True)
    else:
        session.warn(f"{binary} is missing: install Debian's {package} (apt-get install {package}) {why}")


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """The whole suite: unit, API and end-to-end tests against real server processes (offline)."""
    python = _venv(session)
    # The browser tests drive Debian's chromium (Playwright never downloads a browser here); the
    # fleet tests start Debian's nats-server (2.9.10) beside the pinned current one in the venv.
    _debian_package(session, CHROMIUM, "chromium", "for the browser tests")
    _debian_package(session, NATS_SERVER, "nats-server", "for the fleet tests on 2.9.10")
    _debian_package(session, POSTGRES, "postgresql", "for the shared read model's tests")
    session.run(python, "-m", "pytest", "-q", *session.posargs, external=True)


@nox.session(python=False)
def serve(session: nox.Session) -> None:
    """Run the server. Extra arguments go to `fooocus-es serve`, e.g. `nox -s serve -- --preset demo`."""
    python = _venv(session)
    session.run(python, "-m", "fooocus_es", "serve", *session.posargs, external=True)


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    python = _venv(session)
    session.run(python, "-m", "pip", "install", "-q", "ruff==0.17.5", external=True)
    session.run(python, "-m", "ruff", "check", "src", "tests", "bench", external=True)


@nox.session(python=False)
def bench(session: nox.Session) -> None:
    """Server overhead per task, events appended per second, /tasks history query at 100k tasks."""
    python = _venv(session)
    session.run(python, "bench/run.py", *session.posargs, external=True)


@nox.session(python=False)
def fuzz(session: nox.Session) -> None:
    """schemathesis, every check, every route, against a real demo server on a temporary data dir.

    Bounded: 25 examples per operation and 900 s (the fuzzing and stateful phases repeat until the
    time is spent; the generation cases run the CPU demo engine, seconds each). Extra arguments go to `schemathesis run`, e.g. `nox -s fuzz -- --max-time 60 --seed 1`.
    """
    python = _venv(session)
    with tempfile.TemporaryDirectory(prefix="fooocus-es-fuzz-") as data_dir:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        log_path = pathlib.Path(data_dir) / "server.log"
        with open(log_path, "wb") as log:
            server = subprocess.Popen(
                [python, "-m", "fooocus_es", "serve", "--preset", "demo", "--data-dir", data_dir, "--port", str(port)],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "FOOOCUS_ES_DOWNLOAD_MODELS": "false"},
            )  # fmt: skip
            try:
                base = f"http://127.0.0.1:{port}"
                _wait_ready(base, server, log_path)
                # One worker: with two, hypothesis's lambda-source cache raced ("AST constructor recursion
                # depth mismatch"), and the CPU engine serializes the generation cases anyway.
                session.run(
                    str(VENV / "bin" / "schemathesis"), "--config-file", str(FUZZ_CONFIG), "run",
                    f"{base}/schema/openapi.json", "--checks", "all", "--max-examples", "25", "--max-time", "900",
                    "--workers", "1", "--request-timeout", "300", *session.posargs,
                    external=True, env={"SCHEMATHESIS_HOOKS": str(FUZZ_HOOKS)},
                )  # fmt: skip
            finally:
                server.terminate()
                server.wait(30)


def _wait_ready(base: str, server: subprocess.Popen[bytes], log_path: pathlib.Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited:\n{log_path.read_text(errors='replace')[-4000:]}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the server did not start in {timeout:.0f} s")
