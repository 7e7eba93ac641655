"""A real, throwaway PostgreSQL cluster (Debian's `postgresql` package) on loopback, for the shared read model's tests.

`initdb` and `pg_ctl` run as the `postgres` user when the tests run as root (CI does; PostgreSQL
refuses to run as root), in a temporary folder that user owns, with the unix socket there too and
TCP on a free 127.0.0.1 port. fsync is off (the cluster lives for one test session), commits are
not: a commit is written before it returns, so `halt` (a crash) loses none. Each test
gets a database of its own (`new_database`). A missing install fails the test with how to get it.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

DEBIAN_GLOB = "/usr/lib/postgresql/*/bin/initdb"  # Debian's postgresql-NN; the noxfile installs it as root


def postgres_bin_dir() -> Path:
    found = sorted(glob.glob(DEBIAN_GLOB))
    if not found:
        pytest.fail("PostgreSQL is not installed: apt-get install postgresql (nox -s tests does it as root)")
    return Path(found[-1]).parent  # the newest major version


class PostgresServer:
    def __init__(self) -> None:
        self.bin = postgres_bin_dir()
        self.folder = Path(tempfile.mkdtemp(prefix="fooocus-es-pg-"))
        self.data = self.folder / "data"
        self.log_path = self.folder / "postgres.log"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self._names = itertools.count(1)
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *command: str) -> None:
        done = subprocess.run([*self._as_postgres, *command], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            log = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr or done.stdout}\n{log}")

    def start(self) -> PostgresServer:
        """initdb (the first time), then the server on this port; it answers when this returns."""
        if not self.data.exists():
            self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                      "-E", "UTF8", "--locale=C", "--no-sync")  # fmt: skip
        options = (
            f"-p {self.port} -h 127.0.0.1 -k {self.folder} -c fsync=off"
            " -c full_page_writes=off -c max_connections=200"
        )
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_path), "-o", options,
                  "-w", "-t", "30", "start")  # fmt: skip
        return self

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"test_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def halt(self) -> None:
        """The server gone at once (connections cut, as a crash would); `start` brings it back."""
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.folder, ignore_errors=True)
