"""Model files that are missing and their downloads: the start-up fetch of a preset's files, the
runner's fetch of a plan's files, and the status `/health` shows. No torch: the bytes are fetched
by the model store's `download`, passed in."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from fooocus_es.engine.models.catalog import Download, ModelCatalog, missing_downloads
from fooocus_es.engine.planning.plan_types import GenerationPlan
from fooocus_es.engine.planning.tool_types import ToolCall

log = structlog.get_logger("fooocus_es")

Progress = Callable[[int, int | None], None]  # bytes done, bytes total (None: unknown)


class Fetch(Protocol):
    """ModelStore.download: fetch `url` into the `kind` folder as `name`, resuming a .part file."""

    def __call__(self, name: str, url: str, kind: Any, on_progress: Progress | None = None) -> object: ...


@dataclass
class ModelStatus:
    """Files the server's preset needs that are not on disk, and what is being done about them."""

    missing: dict[str, str] = field(default_factory=dict)  # file name -> where to put it / why
    downloading: dict[str, str] = field(default_factory=dict)  # file name -> progress text
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> tuple[dict[str, str], dict[str, str]]:
        with self.lock:
            return dict(self.missing), dict(self.downloading)


class ModelDownloads:
    def __init__(self, catalog: ModelCatalog, fetch: Fetch) -> None:
        self.catalog = catalog
        self.fetch = fetch
        self.status = ModelStatus()

    def check_preset(self, preset: dict[str, Any]) -> list[Download]:
        """The preset's files that are missing, each named in the status with where it goes."""
        missing = missing_downloads(preset, self.catalog.models_dir)
        with self.status.lock:
            for item in missing:
                path = self.catalog.models_dir / item.kind / item.name
                self.status.missing[item.name] = f"put it at {path} (source: {item.url})"
        return missing

    def download_missing(self, missing: list[Download]) -> None:
        """Worker thread: fetch the preset's files; a failure leaves the server up and named in /health."""
        for item in missing:
            logged = [-1]  # the last tenth written to the log

            def progress(done: int, total: int | None, name: str = item.name, logged: list[int] = logged) -> None:
                text = f"{done / total:.0%}" if total else f"{done} bytes"
                with self.status.lock:
                    self.status.downloading[name] = text
                tenth = done * 10 // total if total else done // (256 * 1024 * 1024)  # 10% or 256 MiB steps
                if tenth > logged[0]:
                    logged[0] = tenth
                    log.info("model.download_progress", file=name, done_bytes=done, total_bytes=total, progress=text)

            try:
                log.info("model.download_started", file=item.name, url=item.url)
                self.fetch(item.name, item.url, item.kind, progress)
            except Exception as exc:
                log.error("model.download_failed", file=item.name, error=str(exc))
                with self.status.lock:
                    self.status.missing[item.name] = str(exc)
            else:
                log.info("model.downloaded", file=item.name)
                with self.status.lock:
                    self.status.missing.pop(item.name, None)
            finally:
                with self.status.lock:
                    self.status.downloading.pop(item.name, None)

    def fetch_for_plan(self, work: GenerationPlan | ToolCall, report: Callable[[str], None]) -> None:
        """Runner thread: download the missing files of a plan (or a tool call) that have a known URL,
        reporting progress.

        Files with no known URL are left to the engine, whose error names the file and its folder.
        """
        downloads = self.catalog.downloads()
        catalog = self.catalog
        files = catalog.plan_files(work) if isinstance(work, GenerationPlan) else catalog.tool_call_files(work)
        for name, kind in files:
            known = downloads.get(name)
            if (self.catalog.models_dir / kind / name).exists() or known is None or known.kind != kind:
                continue  # on disk, or no URL for a file of this kind
            shown = [-1]  # the last percentage (or 64 MiB step) reported

            def progress(done: int, total: int | None, name: str = name, shown: list[int] = shown) -> None:
                percent = done * 100 // total if total else -1
                # every 5%, and always the end: 96% then 100% must still say 100%
                finished = percent == 100 and shown[0] != 100
                if percent >= shown[0] + 5 or finished or (percent == -1 and done // (64 << 20) > shown[0]):
                    shown[0] = percent if total else done // (64 << 20)
                    report(f"Downloading {name}: {percent}%" if total else f"Downloading {name}: {done >> 20} MiB")
                with self.status.lock:
                    self.status.downloading[name] = f"{percent}%" if total else f"{done} bytes"

            log.info("model.download_started", file=name, url=known.url)
            # A bundle's file ("grounding-dino-tiny/config.json") goes to its model's folder, made here:
            # the store takes plain file names only.
            sub, _, base = name.rpartition("/")
            folder = f"{kind}/{sub}" if sub else kind
            (self.catalog.models_dir / folder).mkdir(parents=True, exist_ok=True)
            try:
                self.fetch(base, known.url, folder, progress)
            finally:
                with self.status.lock:
                    self.status.downloading.pop(name, None)
            log.info("model.downloaded", file=name)
