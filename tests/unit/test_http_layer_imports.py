"""Importing the HTTP layer loads no torch stack: an API-only node must not need it.

Run in a fresh interpreter, so what other tests imported does not count.
"""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "torchvision", "diffusers", "transformers", "peft", "spandrel", "accelerate", "safetensors")

PROBE = f"""
import importlib, pkgutil, sys
import fooocus_es.app, fooocus_es.api
for module in pkgutil.walk_packages(fooocus_es.api.__path__, "fooocus_es.api."):
    importlib.import_module(module.name)
for name in ("fooocus_es.services", "fooocus_es.runner.worker", "fooocus_es.events.follower",
             "fooocus_es.subscribers.webhooks"):
    importlib.import_module(name)
print(sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r})))
"""


def test_the_app_and_every_api_module_import_without_the_torch_stack() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
