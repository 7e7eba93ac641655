"""Why a tool cannot run here (the API answers 501 with the message)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fooocus_es.engine.models.store import ModelMissing, ModelUnsupported


class ToolUnavailable(Exception):
    """An optional package the tool needs is not installed; the message says how to install it."""


def loaded(path: Path, load: Any, *args: Any) -> Any:
    """`load(*args)`; a tool file that is there but not what its name says is ModelUnsupported.

    Broad on purpose: a bad file fails in onnxruntime's, pickle's, safetensors', struct's or json's
    own exception types. Running out of memory is not the file's fault and passes through.
    """
    try:
        return load(*args)
    except (ModelMissing, ToolUnavailable, MemoryError):
        raise
    except Exception as exc:
        if type(exc).__name__ == "OutOfMemoryError":  # torch's, without importing torch here
            raise
        raise ModelUnsupported(path.name, path, str(exc)) from exc
