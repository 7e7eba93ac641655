"""The wheel a user installs without nox: everything a task needs is in it or among its requirements.

A missing install step hides from a suite that runs in the noxfile's venv (spandrel was once
installed only by the noxfile, so a plain `pip install .` answered inpaint with a 500). This builds
the real wheel, reads what it carries, and lets pip resolve it into a bare venv (a dry run: the
resolution is the point, the 6 GB of torch is not).
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check", "-w", str(out), ROOT],
        check=True,
        timeout=600,
    )
    (built,) = out.glob("fooocus_es-*.whl")
    return built


def _metadata(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return archive.read(name).decode().splitlines()


def test_the_wheel_carries_schema_presets_configs_and_page(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    migrations = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "migrations").glob("**/*.sql"))
    assert "migrations/postgresql/0001_read_model.sql" in migrations  # the shared read model's schema
    assert all(f"fooocus_es/{name}" in names for name in migrations)
    for needed in (
        "fooocus_es/presets/default.json",
        "fooocus_es/presets/demo.json",
        "fooocus_es/engine/models/sdxl/base/model_index.json",
        "fooocus_es/engine/models/sdxl/tiny/model_index.json",
        "fooocus_es/engine/planning/data/style_names.json",
        "fooocus_es/web/index.html",
        "fooocus_es/docs_assets/redoc.standalone.js",
    ):
        assert needed in names, needed


def test_the_wheel_requires_the_pinned_torch_pair_and_spandrel(wheel: Path) -> None:
    requires = {line.split(": ", 1)[1] for line in _metadata(wheel) if line.startswith("Requires-Dist: ")}
    assert {"torch==2.14.1", "torchvision==0.29.1", "spandrel==0.4.1"} <= requires


def test_a_bare_venv_resolves_one_torch_and_every_engine_package(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "bare"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    report = tmp_path / "report.json"
    subprocess.run(
        [
            str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
            "--dry-run", "--ignore-installed", "--report", str(report), str(wheel),
        ],  # fmt: skip
        check=True,
        timeout=600,
    )
    installs = json.loads(report.read_text())["install"]
    resolved = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in installs}
    assert resolved["torch"].split("+")[0] == "2.14.1" and resolved["torchvision"].split("+")[0] == "0.29.1"
    for package in ("spandrel", "diffusers", "transformers", "peft", "safetensors", "litestar", "msgspec"):
        assert package in resolved, package
