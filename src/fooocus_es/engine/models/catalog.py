"""The model catalogue: which model files exist on disk, which the server can fetch or generate,
and which files a plan or a preset needs. No torch: admission, the CLI and an API-only node use it.

One place for what the server, `fooocus-es models` and `/v1/engines/all-models` know about model
files (the store loads them; this only names and finds them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

import msgspec

from fooocus_es.engine.models.files import DEFAULT_UPSCALER, DEFAULT_UPSCALER_URL, UPSCALE_DIR
from fooocus_es.engine.models.safety import safety_checker_installed
from fooocus_es.engine.planning import presets
from fooocus_es.engine.planning.demo_names import DEMO_CHECKPOINT, DEMO_PERFORMANCE_LORAS
from fooocus_es.engine.planning.image_prompt_files import (
    CLIP_VISION_DIR,
    CONTROLNET_DIR,
    IMAGE_PROMPT_DOWNLOADS,
    image_prompt_files,
)
from fooocus_es.engine.planning.performance import PERFORMANCE_LORAS
from fooocus_es.engine.planning.plan import INPAINT_DIR
from fooocus_es.engine.planning.plan_types import GenerationPlan, UpscaleTask
from fooocus_es.engine.planning.tool_files import TOOL_DOWNLOADS, call_files, enhance_files
from fooocus_es.engine.planning.tool_types import ToolCall

ModelKind = Literal["checkpoints", "loras", "vae"]
MODEL_KINDS: Final[tuple[ModelKind, ...]] = ("checkpoints", "loras", "vae")
MODEL_SUFFIX: Final = ".safetensors"
# Demo files the engine writes itself when first used: never downloaded, always available.
GENERATED_FILES: Final[Mapping[str, str]] = MappingProxyType(
    {DEMO_CHECKPOINT: "checkpoints", **dict.fromkeys(DEMO_PERFORMANCE_LORAS.values(), "loras")}
)


class ModelFile(msgspec.Struct, frozen=True):
    kind: str
    name: str
    bytes: int
    path: str


class InstalledNames(msgspec.Struct, frozen=True, kw_only=True):
    """What a request's names are checked against at admission (planning.validate_names' sets)."""

    checkpoints: frozenset[str]  # on disk (downloadable ones are checked separately)
    loras: frozenset[str]  # on disk, fetchable or generated
    vaes: frozenset[str]
    inpaint_files: frozenset[str]
    styles: frozenset[str]
    safety_checker: bool
    # Image prompt model files on disk; None: not checked (they are downloaded on first use).
    image_prompt_files: frozenset[str] | None = None
    # The tools' files on disk (TOOL_DOWNLOADS keys, for enhance's masks); None: not checked.
    tool_files: frozenset[str] | None = None


class Download(msgspec.Struct, frozen=True):
    name: str
    url: str
    kind: str  # the models sub-folder


def names_on_disk(models_dir: Path, kind: ModelKind) -> list[str]:
    """What the store can load: .safetensors files (and diffusers folders for checkpoints), sorted.

    Dot-files are in-progress writes; .part files are interrupted downloads.
    """
    folder = models_dir / kind
    if not folder.is_dir():
        return []

    def loadable(path: Path) -> bool:
        if path.name.startswith("."):
            return False
        if path.is_file():
            return path.suffix == MODEL_SUFFIX
        return kind == "checkpoints" and (path / "model_index.json").is_file()  # a diffusers folder

    return sorted(path.name for path in folder.iterdir() if loadable(path))


def scan(models_dir: Path) -> list[ModelFile]:
    """Every loadable model file with its size (what `fooocus-es models list` prints)."""
    found = []
    for kind in MODEL_KINDS:
        for name in names_on_disk(models_dir, kind):
            path = models_dir / kind / name
            files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
            size = sum(f.stat().st_size for f in files)
            found.append(ModelFile(kind, name, size, str(path)))
    return found


def tool_files_on_disk(models_dir: Path) -> list[str]:
    """Blocking: the tools' catalogue files that are installed (TOOL_DOWNLOADS keys, folder-relative)."""
    return sorted(key for key, (kind, _url) in TOOL_DOWNLOADS.items() if (models_dir / kind / key).is_file())


def missing_downloads(preset: dict[str, Any], models_dir: Path) -> list[Download]:
    """The preset's files that are not on disk, with where they come from."""
    return [
        Download(name, url, kind)
        for name, url, kind in presets.preset_downloads(preset)
        if not (models_dir / kind / name).exists()
    ]


class ModelCatalog:
    """The files a server knows by name: on disk, downloadable (presets, performance modes), generated."""

    def __init__(self, models_dir: Path, data_dir: Path) -> None:
        self.models_dir = models_dir
        self.data_dir = data_dir
        self._downloads: dict[str, Download] | None = None

    def downloads(self) -> dict[str, Download]:
        """file name -> its download, from every preset and the performance modes (read once)."""
        if self._downloads is None:
            found = {name: Download(name, url, "loras") for name, _weight, url in PERFORMANCE_LORAS.values()}
            found[DEFAULT_UPSCALER] = Download(DEFAULT_UPSCALER, DEFAULT_UPSCALER_URL, UPSCALE_DIR)
            found.update((name, Download(name, url, kind)) for name, (kind, url) in IMAGE_PROMPT_DOWNLOADS.items())
            found.update((key, Download(key, url, kind)) for key, (kind, url) in TOOL_DOWNLOADS.items())
            for preset_name in presets.list_presets(self.data_dir):
                try:
                    loaded = presets.load_preset(preset_name, self.data_dir)
                except (presets.PresetError, ValueError):
                    continue
                found.update((name, Download(name, url, kind)) for name, url, kind in presets.preset_downloads(loaded))
            self._downloads = found
        return self._downloads

    def source_of(self, name: str) -> Download | None:
        """Where a file comes from: the data dir's presets first, then the bundled ones."""
        for preset_name in presets.list_presets(self.data_dir):
            try:
                loaded = presets.load_preset(preset_name, self.data_dir)
            except (presets.PresetError, ValueError):
                continue
            for file_name, url, kind in presets.preset_downloads(loaded):
                if file_name == name:
                    return Download(file_name, url, kind)
        return None

    def fetchable(self, kind: str) -> set[str]:
        """Names of `kind` a task may use although they are not on disk yet (fetched or generated on use)."""
        fetched = {d.name for d in self.downloads().values() if d.kind == kind}
        return fetched | {name for name, of_kind in GENERATED_FILES.items() if of_kind == kind}

    def installed(self, styles: Iterable[str], *, check_image_prompt_files: bool = False) -> InstalledNames:
        """Blocking (reads the model folders): the names a request may use now.

        `check_image_prompt_files`: the server does not download them, so a request must find them installed.
        """
        inpaint_dir = self.models_dir / INPAINT_DIR
        image_prompt_names = tool_names = None
        if check_image_prompt_files:
            folders = [self.models_dir / CLIP_VISION_DIR, self.models_dir / CONTROLNET_DIR]
            image_prompt_names = frozenset(p.name for f in folders if f.is_dir() for p in f.iterdir() if p.is_file())
            tool_names = frozenset(tool_files_on_disk(self.models_dir))
        return InstalledNames(
            checkpoints=frozenset(names_on_disk(self.models_dir, "checkpoints")),
            loras=frozenset(names_on_disk(self.models_dir, "loras")) | self.fetchable("loras"),
            vaes=frozenset(names_on_disk(self.models_dir, "vae")) | self.fetchable("vae"),
            inpaint_files=frozenset(p.name for p in inpaint_dir.iterdir()) if inpaint_dir.is_dir() else frozenset(),
            styles=frozenset(styles),
            safety_checker=safety_checker_installed(self.models_dir),
            image_prompt_files=image_prompt_names,
            tool_files=tool_names,
        )

    def tool_call_files(self, call: ToolCall) -> list[tuple[str, str]]:
        """(key, models sub-folder) of the files a tool call reads; none for the demo's generated ones."""
        return [] if call.demo else [(key, TOOL_DOWNLOADS[key][0]) for key in call_files(call)]

    def plan_files(self, plan: GenerationPlan) -> list[tuple[str, str]]:
        """(name, models sub-folder) of every file `plan` needs, demo files excepted (they are generated)."""
        files = [(plan.base_model, "checkpoints")]
        files += [(plan.refiner_model, "checkpoints")] if plan.refiner_model else []
        files += [(name, "loras") for name, _weight in plan.loras]
        files += [(plan.vae_name, "vae")] if plan.vae_name else []
        if isinstance(plan.image_task, UpscaleTask) and plan.base_model != DEMO_CHECKPOINT:
            files.append((DEFAULT_UPSCALER, UPSCALE_DIR))
        if plan.base_model != DEMO_CHECKPOINT:  # the demo model's image prompt files are generated
            skip = plan.control.skip_preprocessor
            needed = {
                name
                for prompt in plan.image_prompts
                for name in image_prompt_files(prompt.cn_type, skip_preprocessor=skip)
            }
            files += [(name, IMAGE_PROMPT_DOWNLOADS[name][0]) for name in sorted(needed)]
            files += [(key, TOOL_DOWNLOADS[key][0]) for key in enhance_files(plan.enhance)]
        return [(name, kind) for name, kind in files if name not in GENERATED_FILES]
