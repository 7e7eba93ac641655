"""`--compile`: the fidelity guard (each new input signature checked once against eager; a graph
that drifts is turned off for that signature) and compile_unet on a real module."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fooocus_es.engine.models.compile import (
    CACHE_ENV,
    FidelityGuard,
    compile_unet,
    relative_error,
    use_compile_cache,
)


class Counting:
    """A callable that counts its calls and answers `scale * x`."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.calls = 0

    def __call__(self, x: torch.Tensor, *, flag: bool = False) -> tuple[torch.Tensor]:
        self.calls += 1
        return (x * self.scale,)


def test_a_matching_graph_is_used_after_one_checked_call_per_signature() -> None:
    eager, compiled = Counting(1.0), Counting(1.0 + 1e-5)
    guard = FidelityGuard(compiled, eager, "unet")
    x = torch.ones(2, 4)
    assert torch.equal(guard(x)[0], x)  # the checked call answers eager's output
    assert (eager.calls, compiled.calls) == (1, 1)
    guard(x)
    guard(x + 1)  # same shapes: the same signature
    assert (eager.calls, compiled.calls) == (1, 3)
    guard(torch.ones(3, 4))  # a new shape is checked again
    assert (eager.calls, compiled.calls) == (2, 4) and len(guard.verdicts) == 2 and all(guard.verdicts.values())


def test_a_drifting_graph_is_turned_off_for_its_signature_only() -> None:
    eager, compiled = Counting(1.0), Counting(1.1)  # 10% off: above every tolerance
    guard = FidelityGuard(compiled, eager, "unet")
    x = torch.ones(2, 4)
    assert torch.equal(guard(x)[0], x) and torch.equal(guard(x)[0], x)  # eager from then on
    assert (eager.calls, compiled.calls) == (2, 1)
    assert list(guard.verdicts.values()) == [False] and list(guard.errors.values()) == [pytest.approx(0.1, rel=1e-4)]
    half = Counting(1.0 + 1e-3)  # within float16's tolerance, not float32's
    guard = FidelityGuard(half, Counting(1.0), "unet")
    guard(torch.ones(2, dtype=torch.float16))
    guard(torch.ones(2, dtype=torch.float32))
    assert sorted(guard.verdicts.values()) == [False, True]


def test_relative_error_is_scaled_by_the_reference() -> None:
    assert relative_error(torch.tensor([10.0, 21.0]), torch.tensor([10.0, 20.0])) == pytest.approx(0.05)


def test_the_cache_goes_to_the_data_dir_unless_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert use_compile_cache(tmp_path) == tmp_path / "cache" / "torch-compile"
    assert (tmp_path / "cache" / "torch-compile").is_dir()
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert use_compile_cache(tmp_path / "other") == tmp_path / "mine"


def test_compile_unet_compiles_in_place_behind_the_guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU(), torch.nn.Linear(8, 4))
    x = torch.randn(3, 8)
    expected = model(x)
    assert compile_unet(model, "off") is None and model._compiled_call_impl is None
    guard = compile_unet(model, "default", name="tiny")
    assert guard is not None and model._compiled_call_impl is guard  # the module itself: no wrapper
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)  # checked call: eager's answer
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)  # the compiled graph's
    assert list(guard.verdicts.values()) == [True] and list(guard.errors.values())[0] < 1e-5
