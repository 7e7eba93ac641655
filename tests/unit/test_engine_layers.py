"""The engine's layers keep their direction: an AST walk of every module in planning/, imaging/ and models/.

Every import statement counts, including ones inside functions and under TYPE_CHECKING: a lazy
torch import is still a torch dependency of the rules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import fooocus_es.engine

ENGINE = Path(fooocus_es.engine.__file__).resolve().parent
# The torch stack, and the libraries that only make sense on top of it.
HEAVY = frozenset(
    {"torch", "torchvision", "diffusers", "transformers", "peft", "spandrel", "safetensors", "accelerate"}
)
PURE_LAYERS = ("planning", "imaging")
# The project's own packages each layer may import: itself and the layers under it. models/ may ask
# demo/ for a fixture; diffusion/ (the top) and demo/ (beside the loaders) are not constrained here.
ALLOWED_OWN = {
    "planning": ("fooocus_es.engine.planning",),
    "imaging": ("fooocus_es.engine.imaging", "fooocus_es.engine.planning"),
    "models": (
        "fooocus_es.engine.models",
        "fooocus_es.engine.imaging",
        "fooocus_es.engine.planning",
        "fooocus_es.engine.demo",
    ),
}


def imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import in `source`; relative ones resolved against `package`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            found.append((node.lineno, ".".join(part for part in (base, node.module) if part)))
    return found


def module_imports(path: Path) -> list[tuple[int, str]]:
    package = ".".join(("fooocus_es", "engine", *path.relative_to(ENGINE).parent.parts))
    return imported_modules(path.read_text(encoding="utf-8"), package)


def layer_files(layer: str) -> list[Path]:
    files = sorted((ENGINE / layer).rglob("*.py"))
    assert len(files) > 3, f"engine/{layer}/ has moved or is empty"  # the walk must have something to check
    return files


@pytest.mark.parametrize("layer", PURE_LAYERS)
def test_pure_layer_imports_no_torch_stack(layer: str) -> None:
    offending = [
        f"{path.relative_to(ENGINE)}:{line} imports {module}"
        for path in layer_files(layer)
        for line, module in module_imports(path)
        if module.split(".")[0] in HEAVY
    ]
    assert offending == []


@pytest.mark.parametrize("layer", sorted(ALLOWED_OWN))
def test_layer_imports_only_itself_and_lower_layers(layer: str) -> None:
    # A pure module importing models/, diffusion/ or demo/ would pull torch in through them.
    offending = [
        f"{path.relative_to(ENGINE)}:{line} imports {module}"
        for path in layer_files(layer)
        for line, module in module_imports(path)
        if module.startswith("fooocus_es") and not module.startswith(ALLOWED_OWN[layer])
    ]
    assert offending == []


def test_the_walk_sees_lazy_relative_and_type_checking_imports() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import torch.nn\n"
        "def f():\n    from diffusers import X\n    from . import plan\n    from ..models.store import S\n"
    )
    modules = {module for _line, module in imported_modules(source, "fooocus_es.engine.planning")}
    own = {"fooocus_es.engine.planning", "fooocus_es.engine.models.store"}
    assert modules == {"typing", "torch.nn", "diffusers", *own}


def test_the_old_flat_modules_are_gone() -> None:
    # No compatibility shims: every module lives in its layer's folder.
    assert sorted(path.name for path in ENGINE.glob("*.py")) == ["__init__.py"]
