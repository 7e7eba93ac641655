"""The admission budgets and storage fault values, without a server: the queue bound's places, the
decode budget (pixels per request, concurrent decodes, one decoded image at a time), and which
errors are storage faults."""

from __future__ import annotations

import base64
import errno
import io
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from fooocus_es.api import inputs as request_inputs
from fooocus_es.api.inputs import has_images, store_request_images
from fooocus_es.api.queue_bound import QueueBound
from fooocus_es.events.sqlite import SqliteEventLog
from fooocus_es.media.blobs import LocalBlobs
from fooocus_es.media.errors import DecodersBusy, ImageBudgetExceeded, InputImageError
from fooocus_es.media.limits import DecodeBudget, ImageLimits
from fooocus_es.ops.storage import StorageHealth, classify


def png_b64(width: int, height: int, color: tuple[int, int, int] = (10, 20, 30)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_the_bound_gives_exactly_the_free_places_and_takes_back_released_ones() -> None:
    waiting = [3]
    bound = QueueBound(5, lambda: waiting[0])
    assert [bound.take() for _ in range(4)] == [True, True, False, False]
    bound.release()
    assert bound.take() is True and bound.taken() == 5
    waiting[0] = 0  # the runner claimed them
    assert bound.take() is True


def test_a_request_over_the_pixel_total_is_refused_before_any_decode_naming_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[str] = []
    real = request_inputs.decode_image_bytes

    def decode(data: bytes, **kw: Any) -> Image.Image:
        decoded.append(kw["field"])
        return real(data, **kw)

    monkeypatch.setattr(request_inputs, "decode_image_bytes", decode)
    params = {"uov_input_image": png_b64(600, 600), "inpaint_input_image": png_b64(600, 600), "controlnet_image": []}
    with pytest.raises(ImageBudgetExceeded) as refused:
        budget = DecodeBudget(max_request_pixels=500_000)
        store_request_images(params, LocalBlobs(tmp_path), ImageLimits(), budget=budget)
    assert refused.value.field == "inpaint_input_image" and refused.value.status_code == 413
    assert "720000 pixels in total" in refused.value.message and "500000 pixels per request" in refused.value.message
    assert decoded == [] and not (tmp_path / "inputs").exists()


def test_images_are_decoded_one_at_a_time_and_written_only_when_all_are_good(tmp_path: Path) -> None:
    params = {
        "uov_input_image": png_b64(32, 32),
        "inpaint_input_image": "None",  # a "no image" marker becomes ""
        "controlnet_image": [{"cn_img": png_b64(16, 16, (1, 2, 3))}, {"cn_img": "not an image"}],
    }
    with pytest.raises(InputImageError) as bad:
        store_request_images(params, LocalBlobs(tmp_path), ImageLimits())
    assert bad.value.field == "controlnet_image[1].cn_img"
    assert not (tmp_path / "inputs").exists()  # nothing of the good ones was written
    params["controlnet_image"].pop()
    stored = store_request_images(params, LocalBlobs(tmp_path), ImageLimits())
    assert stored["uov_input_image"].startswith("inputs/") and stored["inpaint_input_image"] == ""
    assert stored["controlnet_image"][0]["cn_img"].startswith("inputs/")
    assert len(list((tmp_path / "inputs").glob("*.png"))) == 2


def test_concurrent_decodes_are_bounded_across_requests_and_a_long_wait_is_a_429(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = DecodeBudget(concurrent=2, wait_s=0.2)
    inside, peak, lock, gate = [0], [0], threading.Lock(), threading.Event()
    real = request_inputs.decode_image_bytes

    def slow_decode(data: bytes, **kw: Any) -> Image.Image:
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        gate.wait(5)
        with lock:
            inside[0] -= 1
        return real(data, **kw)

    monkeypatch.setattr(request_inputs, "decode_image_bytes", slow_decode)
    errors: list[Exception] = []

    def one(index: int) -> None:
        params = {"uov_input_image": png_b64(8, 8, (index, 0, 0)), "controlnet_image": []}
        try:
            store_request_images(params, LocalBlobs(tmp_path), ImageLimits(), budget=budget)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads[:2]:
        thread.join(0.1)
    threading.Timer(1.0, gate.set).start()  # the two decoding hold their slots past the others' wait
    for thread in threads:
        thread.join(10)
    assert peak[0] == 2
    assert len(errors) == 2 and all(isinstance(e, DecodersBusy) and e.status_code == 429 for e in errors)


def test_has_images_ignores_no_image_markers() -> None:
    assert not has_images({"uov_input_image": "None", "inpaint_input_image": "", "controlnet_image": [{"cn_img": ""}]})
    assert has_images({"controlnet_image": [{"cn_img": png_b64(2, 2)}]})


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (sqlite3.OperationalError("database or disk is full"), "full"),
        (sqlite3.OperationalError("database is locked"), "locked"),
        (sqlite3.OperationalError("attempt to write a readonly database"), "unwritable"),
        (OSError(errno.ENOSPC, "No space left on device"), "full"),
        (OSError(errno.EROFS, "Read-only file system"), "unwritable"),
        (OSError(errno.EIO, "Input/output error"), "error"),
        (sqlite3.ProgrammingError("Cannot operate on a closed database."), None),
        (ValueError("a bad value"), None),
    ],
)
def test_which_errors_are_storage_faults(error: Exception, kind: str | None) -> None:
    assert classify(error) == kind


def test_the_probe_reports_a_locked_log_and_clears_when_it_is_released(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "db.sqlite3", busy_timeout_s=0.1)
    health = StorageHealth({"outputs": tmp_path}, log.check_writable)
    assert health.probe() == []
    locker = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    faults = health.probe()
    assert [(f.place, f.kind, f.status_code) for f in faults] == [("log", "locked", 503)]
    assert "locked by another process" in faults[0].describe()
    locker.execute("ROLLBACK")
    locker.close()
    assert health.probe() == [] and health.first() is None
    log.close()
