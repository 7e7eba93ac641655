"""SR models (engine/models/upscalers.py): safe loading through spandrel, tiled 4x upscaling, bounded memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from fooocus_es.engine.demo.upscaler import DEMO_UPSCALER, ensure_demo_upscaler, write_demo_upscaler
from fooocus_es.engine.models.files import DEFAULT_UPSCALER, DEFAULT_UPSCALER_URL
from fooocus_es.engine.models.upscalers import (
    UpscalerMissing,
    UpscalerModel,
    UpscalerUnsupported,
    list_upscalers,
    load_upscaler,
    resize_to,
    upscale,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """upscale_models/ with the demo model as .safetensors, and in Fooocus's key names as .pth and .bin."""
    path = tmp_path_factory.mktemp("upscale_models")
    write_demo_upscaler(path / "demo.safetensors", kind="safetensors")
    write_demo_upscaler(path / "demo.pth", kind="pth", fooocus_keys=True)
    write_demo_upscaler(path / DEFAULT_UPSCALER, kind="pth", fooocus_keys=True)
    write_demo_upscaler(path / "strong.safetensors", noise=1.0)  # mixes pixels hard: edge effects show
    return path


@pytest.fixture(scope="module")
def model(folder: Path) -> UpscalerModel:
    return load_upscaler(folder / "demo.safetensors")


def smooth_image(width: int, height: int, seed: int = 0) -> Image.Image:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([128 + 100 * np.sin(xx / 7), 128 + 100 * np.cos(yy / 9), (xx * 3 + yy * 2) % 256], axis=-1)
    rgb += np.random.default_rng(seed).normal(0, 10, rgb.shape)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def write_compact(path: Path, *, scale: int, features: int = 4, channels: int = 3) -> Path:
    """A tiny Real-ESRGAN Compact (SRVGGNetCompact): another spandrel architecture, and very cheap to run."""
    generator = torch.Generator().manual_seed(1)
    shapes = {
        "body.0.weight": (features, channels, 3, 3),
        "body.0.bias": (features,),
        "body.1.weight": (features,),
        "body.2.weight": (features, features, 3, 3),
        "body.2.bias": (features,),
        "body.3.weight": (features,),
        "body.4.weight": (channels * scale * scale, features, 3, 3),
        "body.4.bias": (channels * scale * scale,),
    }
    save_file({k: torch.randn(s, generator=generator) * 0.05 for k, s in shapes.items()}, str(path))
    return path


# -- files and loading ----------------------------------------------------------------------------


def test_default_upscaler_is_fooocus_file() -> None:
    assert DEFAULT_UPSCALER == "fooocus_upscaler_s409985e5.bin"
    assert DEFAULT_UPSCALER_URL.endswith("/lllyasviel/misc/resolve/main/fooocus_upscaler_s409985e5.bin")


def test_list_upscalers_lists_model_files_only(tmp_path: Path) -> None:
    for name in ["b.pth", "a.safetensors", "c.bin", "d.pt", "notes.txt", "e.ckpt"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.pth").mkdir()
    assert list_upscalers(tmp_path) == ["a.safetensors", "b.pth", "c.bin", "d.pt", "e.ckpt"]
    assert list_upscalers(tmp_path / "absent") == []


@pytest.mark.parametrize("name", ["demo.safetensors", "demo.pth", DEFAULT_UPSCALER])
def test_demo_model_loads_as_4x_esrgan_through_the_real_loader(folder: Path, name: str) -> None:
    loaded = load_upscaler(folder / name)
    assert (loaded.name, loaded.scale, loaded.architecture) == (name, 4, "ESRGAN")
    assert loaded.dtype == torch.float32 and loaded.device.type == "cpu"


def test_fooocus_key_names_load_the_same_weights(folder: Path, model: UpscalerModel) -> None:
    fooocus = load_upscaler(folder / "demo.pth")
    image = smooth_image(20, 16)
    np.testing.assert_array_equal(pixels(upscale(fooocus, image)), pixels(upscale(model, image)))


def test_ensure_demo_upscaler_writes_once(tmp_path: Path) -> None:
    path = ensure_demo_upscaler(tmp_path)
    assert path.name == DEMO_UPSCALER and list_upscalers(tmp_path) == [DEMO_UPSCALER]
    mtime = path.stat().st_mtime_ns
    assert ensure_demo_upscaler(tmp_path) == path and path.stat().st_mtime_ns == mtime


def test_demo_weights_are_deterministic(tmp_path: Path) -> None:
    a = write_demo_upscaler(tmp_path / "a.safetensors").read_bytes()
    assert write_demo_upscaler(tmp_path / "b.safetensors").read_bytes() == a
    assert write_demo_upscaler(tmp_path / "c.safetensors", seed=1).read_bytes() != a


def test_missing_file_names_the_file_and_the_folder(tmp_path: Path) -> None:
    with pytest.raises(UpscalerMissing) as caught:
        load_upscaler(tmp_path / DEFAULT_UPSCALER)
    assert DEFAULT_UPSCALER in str(caught.value) and str(tmp_path) in str(caught.value)
    assert caught.value.name == DEFAULT_UPSCALER


class RunsCode:
    """Pickles to `exec(code)`: loading it with a plain unpickler would run the code."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (self.code,))


@pytest.mark.parametrize("suffix", [".pth", ".bin", ".pt", ".ckpt"])
def test_pickle_that_runs_code_is_refused_and_the_code_does_not_run(tmp_path: Path, suffix: str) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / f"evil{suffix}"
    state = write_demo_upscaler(tmp_path / "ok.pth", kind="pth")
    payload = torch.load(state, weights_only=True) | {"extra": RunsCode(f"open({str(marker)!r}, 'w').write('x')")}
    torch.save(payload, path)
    with pytest.raises(UpscalerUnsupported, match="refused.*exec"):
        load_upscaler(path)
    assert not marker.exists()


def test_torchscript_archive_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    with pytest.warns(FutureWarning):  # torch.jit is deprecated, but such files are still about
        torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 3, 3)), str(path))
    with pytest.raises(UpscalerUnsupported, match="TorchScript"):
        load_upscaler(path)


def test_unknown_architecture_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "random.safetensors"
    save_file({"encoder.weight": torch.zeros(4, 4), "decoder.bias": torch.zeros(4)}, str(path))
    with pytest.raises(UpscalerUnsupported, match="not a model architecture"):
        load_upscaler(path)


def test_model_that_does_not_enlarge_is_unsupported(tmp_path: Path) -> None:
    with pytest.raises(UpscalerUnsupported, match="scale 1.*not an image-to-image super-resolution"):
        load_upscaler(write_compact(tmp_path / "denoise_1x.safetensors", scale=1))


def test_grayscale_model_is_unsupported(tmp_path: Path) -> None:
    with pytest.raises(UpscalerUnsupported, match="1 -> 1 channels"):
        load_upscaler(write_compact(tmp_path / "gray_4x.safetensors", scale=4, channels=1))


@pytest.mark.parametrize(
    ("name", "content"),
    [("corrupt.safetensors", b"\x00garbage"), ("corrupt.pth", b"not a pickle"), ("tensor.pth", None)],
)
def test_unreadable_files_are_unsupported(tmp_path: Path, name: str, content: bytes | None) -> None:
    path = tmp_path / name
    if content is None:
        torch.save(torch.zeros(3), path)  # a valid file, but not a state dict
    else:
        path.write_bytes(content)
    with pytest.raises(UpscalerUnsupported):
        load_upscaler(path)


def test_other_sr_architectures_are_accepted(tmp_path: Path) -> None:
    loaded = load_upscaler(write_compact(tmp_path / "compact_2x.safetensors", scale=2))
    assert loaded.scale == 2 and loaded.architecture == "RealESRGAN Compact"
    assert upscale(loaded, smooth_image(33, 17)).size == (66, 34)


# -- upscaling ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(1, 1), (3, 5), (37, 1), (45, 29), (67, 45)])
def test_output_is_exactly_scale_times_input(model: UpscalerModel, width: int, height: int) -> None:
    out = upscale(model, smooth_image(width, height), tile=32, overlap=8)
    assert out.mode == "RGB" and out.size == (width * 4, height * 4)


def test_non_rgb_input_is_converted(model: UpscalerModel) -> None:
    for mode in ("RGBA", "L", "P"):
        assert upscale(model, smooth_image(12, 10).convert(mode)).size == (48, 40)


def test_demo_output_resembles_the_input(model: UpscalerModel) -> None:
    image = smooth_image(40, 30)
    nearest = pixels(image.resize((160, 120), Image.Resampling.NEAREST))
    assert np.abs(pixels(upscale(model, image)) - nearest).mean() < 16


def test_tiled_equals_whole_image_run(model: UpscalerModel) -> None:
    image = smooth_image(120, 100)
    whole = pixels(upscale(model, image, tile=512))
    tiled = pixels(upscale(model, image, tile=80, overlap=32))
    assert np.abs(tiled - whole).max() <= 1  # rounding only


def test_no_seams_with_a_strongly_mixing_model(folder: Path) -> None:
    # Receptive field of the 1-block RRDBNet: ~18 input pixels; the overlap (32) covers it.
    strong = load_upscaler(folder / "strong.safetensors")
    image = smooth_image(120, 100)
    whole = pixels(upscale(strong, image, tile=512))
    diff = np.abs(pixels(upscale(strong, image, tile=80, overlap=32)) - whole)
    assert diff.mean() < 0.2 and np.percentile(diff, 99.9) <= 8 and diff.max() <= 32, (diff.mean(), diff.max())


def test_progress_is_reported_per_tile(model: UpscalerModel) -> None:
    calls: list[tuple[int, int]] = []
    upscale(model, smooth_image(64, 40), tile=32, overlap=8, on_tile=lambda done, total: calls.append((done, total)))
    total = calls[-1][1]
    assert total > 1 and calls == [(done, total) for done in range(1, total + 1)]


def test_runs_under_inference_mode(model: UpscalerModel, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    call = type(model.descriptor).__call__

    def spy(self: object, image: torch.Tensor) -> torch.Tensor:
        seen.append(torch.is_inference_mode_enabled())
        return call(self, image)

    monkeypatch.setattr(type(model.descriptor), "__call__", spy)
    upscale(model, smooth_image(8, 8))
    assert seen == [True]


def test_resize_to_lanczos() -> None:
    image = smooth_image(64, 48)
    assert resize_to(image, 64, 48) is image
    assert resize_to(image, 32, 24).size == (32, 24)


MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time, tracemalloc
    from pathlib import Path
    import numpy as np
    import torch
    from PIL import Image
    sys.path.insert(0, sys.argv[2])
    from test_upscalers import write_compact
    from fooocus_es.engine.models.upscalers import load_upscaler, upscale

    torch.set_num_threads(1)  # 2 threads on a shared 2-core box is slower and far less steady
    model = load_upscaler(write_compact(Path(sys.argv[1]), scale=4))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (2048, 2048, 3), dtype=np.uint8))
    with open("/proc/self/statm") as statm:
        before = int(statm.read().split()[1]) * resource.getpagesize()
    tracemalloc.start()
    start = time.perf_counter()
    out = upscale(model, image, tile=256, overlap=32)
    seconds = time.perf_counter() - start
    numpy_peak = tracemalloc.get_traced_memory()[1]
    # VmHWM, not ru_maxrss: execve folds the parent's peak (pytest's, here) into ru_maxrss.
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    print(json.dumps({"size": out.size, "seconds": seconds, "rss_growth": peak - before, "numpy_peak": numpy_peak}))
    """
)


def test_2048px_input_upscales_in_bounded_memory(tmp_path: Path) -> None:
    # A fresh process: its peak RSS must not include what earlier tests in this one allocated.
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path / "compact.safetensors"), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
        # A fixed mmap threshold: freed blocks go back to the OS, so RSS tracks what the code holds
        # rather than what glibc's dynamic threshold happened to keep cached (seen: 0.5 vs 1.1 GiB).
        env={**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20), "MALLOC_ARENA_MAX": "2"},
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    mib = 2**20
    print(
        f"2048->8192 tile 256: {result['seconds']:.1f} s, RSS growth {result['rss_growth'] / mib:.0f} MiB, "
        f"numpy peak {result['numpy_peak'] / mib:.0f} MiB"
    )
    assert result["size"] == [8192, 8192]
    # The PIL result alone is 256 MiB (RGB is 4 bytes a pixel); a whole-image float32 accumulator
    # would add 768 MiB. The numpy side is one float band (1024 x 8192 x 3 x 4 = 96 MiB) and a tile.
    assert result["numpy_peak"] < 200 * mib
    assert result["rss_growth"] < 256 * mib + 450 * mib
