"""The browser page, driven by Playwright in Debian's chromium against real server processes (demo model).

Needs `apt-get install -y chromium` (for /usr/bin/chromium) and `pip install playwright==1.65.2`;
`playwright install` is NOT needed. Screenshots for review go to test-output/screenshots/.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-output" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 30_000

# Chrome logs every non-2xx fetch as a console error; tests that provoke one list exactly which they expect.
_NETWORK_ERROR = re.compile(r"Failed to load resource: the server responded with a status of (\d{3})")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium with `apt-get update && apt-get install -y chromium` "
            "(do not run `playwright install`)",
            pytrace=False,
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "playwright is missing: `pip install playwright==1.65.2` (or `pip install -e .[test]`)", pytrace=False
        )
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield launched
        launched.close()


class Console:
    """Console errors and uncaught page errors of one page."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def on_console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(f"{message.text} @ {message.location.get('url', '')}")

    def on_page_error(self, error: Any) -> None:
        self.errors.append(f"uncaught: {error}")

    def network_statuses(self) -> list[int]:
        return [int(match.group(1)) for text in self.errors if (match := _NETWORK_ERROR.search(text))]

    def others(self) -> list[str]:
        return [text for text in self.errors if not _NETWORK_ERROR.search(text)]


@pytest.fixture
def open_page(browser: Any) -> Iterator[Any]:
    contexts: list[Any] = []

    def open_(base: str, viewport: dict[str, int] = DESKTOP) -> tuple[Any, Console]:
        context = browser.new_context(viewport=viewport)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        console = Console()
        page.on("console", console.on_console)
        page.on("pageerror", console.on_page_error)
        page.goto(base + "/")
        return page, console

    yield open_
    for context in contexts:
        context.close()


def fill_fast(page: Any, prompt: str, size: str = "64*64") -> None:
    """Lightning (4 steps) at a tiny size: about a second on a CPU with the demo model."""
    page.fill("#prompt", prompt)
    page.select_option("#performance_selection", "Lightning")
    page.select_option("#aspect_ratios_selection", "custom")
    page.fill("#aspect_custom", size)


def wait_done(page: Any, status: str = "finished") -> None:
    page.wait_for_function(
        "s => document.getElementById('task-status').dataset.status === s "
        "&& !document.getElementById('generate').disabled",
        arg=status,
    )


def gallery_widths(page: Any) -> list[int]:
    page.wait_for_function(
        "() => { const imgs = [...document.querySelectorAll('#gallery img')];"
        " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }"
    )
    return page.eval_on_selector_all("#gallery img", "imgs => imgs.map(i => i.naturalWidth)")


def submit(base: str, body: dict[str, Any], headers: dict[str, str]) -> str:
    body = {"performance_selection": "Lightning", "async_process": True, **body}
    response = requests.post(base + "/v1/engine/generate/", json=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["task_id"]


def wait_for(base: str, task_id: str, headers: dict[str, str], until: str = "ended", timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = requests.get(f"{base}/tasks/{task_id}", headers=headers, timeout=10).json()
        running = record["task_status"] == "running" and record["progress"] > 13  # past loading: sampling
        if record["finish_mills"] or (until == "running" and running):
            return
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} did not reach {until}: {record}")


def png_bytes(color: tuple[int, int, int], size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, "PNG")
    return buffer.getvalue()


def task_id_of(page: Any) -> str:
    task_id = page.get_attribute("#task-id", "data-task-id")
    assert task_id, "the page shows no task id"
    return task_id


def check_page_served_publicly_without_traversal(base: str) -> None:
    """On a server with an API key: the page and its assets need none; nothing outside web/ is reachable."""
    index = requests.get(base + "/", timeout=10)
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert "/web/app.js" in index.text
    for name, kind in [("app.js", "text/javascript"), ("style.css", "text/css"), ("favicon.svg", "image/svg+xml")]:
        response = requests.get(f"{base}/web/{name}", timeout=10)
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind), name
    for bad in ["/web/..%2Fapi%2Fweb.py", "/web/%2E%2E%2Fapp.py", "/web/missing.js", "/web/.hidden.css", "/web/web.py"]:
        assert requests.get(base + bad, timeout=10).status_code == 404, bad
    assert requests.get(base + "/health", timeout=10).status_code == 401  # the API itself stays guarded


def test_generate_view_history_and_rerun(server: Any, open_page: Any) -> None:
    page, console = open_page(server.url)
    page.wait_for_selector("#style-list .style-item")  # the style names came from the API
    fill_fast(page, "a lighthouse at dusk, browser test")
    started = time.monotonic()
    page.click("#generate")
    wait_done(page)
    assert page.eval_on_selector("#progress", "p => p.value") == 100
    assert "Finished" in page.text_content("#progress-message")
    assert gallery_widths(page) == [64]
    first_task = task_id_of(page)
    generate_seconds = time.monotonic() - started
    page.screenshot(path=str(SHOTS / "desktop-generated.png"), full_page=True)

    # Full size in the lightbox, closed with Escape.
    page.click("#gallery .thumb")
    page.wait_for_function(
        "() => document.getElementById('lightbox').open && document.getElementById('lightbox-img').naturalWidth > 0"
    )
    assert page.get_attribute("#lightbox-open", "href").split("?")[0].endswith(".png")
    page.keyboard.press("Escape")
    page.wait_for_function("() => !document.getElementById('lightbox').open")

    # History: the task with its thumbnail.
    page.click("#tab-history")
    row = page.locator(f'.task-row[data-task-id="{first_task}"]')
    row.wait_for()
    assert row.locator(".badge").text_content() == "finished"
    assert "a lighthouse at dusk, browser test" in row.locator(".task-prompt").text_content()
    page.wait_for_function(
        "id => { const img = document.querySelector(`.task-row[data-task-id='${id}'] .thumb img`);"
        " return img && img.complete && img.naturalWidth > 0; }",
        arg=first_task,
    )
    page.screenshot(path=str(SHOTS / "desktop-history.png"), full_page=True)

    # Its parameters, then re-run from them.
    row.locator(".task-open").click()
    page.wait_for_function("() => document.getElementById('task-dialog').open")
    params_text = page.text_content("#task-params")
    assert "aspect_ratios_selection" in params_text and "64*64" in params_text and "Lightning" in params_text
    page.screenshot(path=str(SHOTS / "desktop-task-parameters.png"))
    page.click("#task-rerun")
    page.wait_for_function(
        "id => { const t = document.getElementById('task-id').dataset.taskId; return t && t !== id; }", arg=first_task
    )
    wait_done(page)
    second_task = task_id_of(page)
    assert second_task != first_task
    assert page.input_value("#prompt") == "a lighthouse at dusk, browser test"
    assert gallery_widths(page) == [64]
    first = requests.get(f"{server.url}/tasks/{first_task}", timeout=10).json()["req_params"]
    second = requests.get(f"{server.url}/tasks/{second_task}", timeout=10).json()["req_params"]
    for name in ("prompt", "aspect_ratios_selection", "performance_selection", "image_seed", "image_number"):
        assert second[name] == first[name], name

    assert console.errors == [], console.errors
    assert generate_seconds < 20, f"one 64*64 Lightning generation took {generate_seconds:.1f} s through the page"


def test_stop_a_running_task(server: Any, open_page: Any) -> None:
    page, console = open_page(server.url)
    fill_fast(page, "a long one to stop", size="256*256")
    page.click("#advanced > summary")
    page.fill("#overwrite_step", "200")
    page.click("#generate")
    # Sampling has begun: the live preview of the running task shows, with its step message.
    page.wait_for_function(
        "() => document.getElementById('task-status').dataset.status === 'running'"
        " && !document.getElementById('preview-box').hidden && document.getElementById('preview').naturalWidth > 0"
    )
    assert "Sampling step" in page.text_content("#progress-message")
    assert page.is_enabled("#stop")
    page.click("#stop")
    wait_done(page, "stop")
    assert page.text_content("#task-status") == "stopped"
    assert "Stopped" in page.text_content("#progress-message")
    record = requests.get(f"{server.url}/tasks/{task_id_of(page)}", timeout=10).json()
    assert record["task_status"] == "stop"
    assert console.errors == [], console.errors


def test_validation_error_is_shown_in_words(server: Any, open_page: Any) -> None:
    page, console = open_page(server.url)
    fill_fast(page, "bad size", size="12 by 34")
    page.click("#generate")
    error = page.locator("#form-error")
    error.wait_for(state="visible")
    assert "aspect_ratios_selection" in error.text_content()
    assert "W*H" in error.text_content()
    assert page.get_attribute("#aspect_custom", "aria-invalid") == "true"
    page.screenshot(path=str(SHOTS / "desktop-validation-error.png"))
    assert page.is_enabled("#generate")
    # Another 400, from a field the server names: unknown extra field.
    page.fill("#aspect_custom", "64*64")
    page.click("#advanced > summary")
    page.fill("#extra_json", "{not json")
    page.click("#generate")
    page.wait_for_function("() => document.getElementById('form-error').textContent.includes('not valid JSON')")
    assert console.others() == [], console.errors
    assert console.network_statuses() == [400], console.errors


def test_image_inputs_dropped_uploaded_and_a_painted_mask(server: Any, open_page: Any) -> None:
    page, console = open_page(server.url)
    fill_fast(page, "image inputs")
    page.click("#image-inputs > summary")
    page.select_option("#uov_method", "Vary (Subtle)")
    # Drag and drop onto the upscale/vary zone (a real DataTransfer carrying a file).
    page.evaluate(
        """bytes => {
            const file = new File([new Uint8Array(bytes)], "red.png", {type: "image/png"});
            const data = new DataTransfer();
            data.items.add(file);
            const zone = document.querySelector('.drop[data-image="uov_input_image"]');
            zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: data, bubbles: true, cancelable: true}));
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
        }""",
        list(png_bytes((220, 30, 30))),
    )
    page.wait_for_function(
        "() => { const i = document.querySelector('.drop[data-image=uov_input_image] .drop-preview');"
        " return !i.hidden && i.naturalWidth === 64; }"
    )
    # The inpaint image through the file picker, then a brush stroke over its top-left quarter.
    page.set_input_files(
        "#inpaint_input_image",
        files=[{"name": "blue.png", "mimeType": "image/png", "buffer": png_bytes((30, 30, 220))}],
    )
    page.wait_for_function("() => document.getElementById('mask-canvas').width === 64")
    page.fill("#brush-size", "40")  # screen pixels
    box = page.locator("#mask-canvas").bounding_box()
    assert box and box["width"] > 0
    page.mouse.move(box["x"] + box["width"] * 0.1, box["y"] + box["height"] * 0.1)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.35, box["y"] + box["height"] * 0.35, steps=6)
    page.mouse.up()
    page.screenshot(path=str(SHOTS / "desktop-image-inputs.png"), full_page=True)
    page.click("#generate")
    page.wait_for_function("() => !document.getElementById('generate').disabled")
    params = requests.get(f"{server.url}/tasks/{task_id_of(page)}", timeout=10).json()["req_params"]
    assert params["uov_method"] == "Vary (Subtle)"
    uov = image_at(params["uov_input_image"])
    assert uov.size == (64, 64) and uov.convert("RGB").getpixel((32, 32)) == (220, 30, 30)
    assert image_at(params["inpaint_input_image"]).convert("RGB").getpixel((32, 32)) == (30, 30, 220)
    mask = image_at(params["inpaint_mask_image_upload"]).convert("L")
    assert mask.size == (64, 64)
    assert mask.getpixel((14, 14)) > 200, "the painted stroke is white in the mask"
    assert mask.getpixel((60, 60)) < 50 and mask.getpixel((60, 4)) < 50, "the rest of the mask is black"
    assert console.errors == [], console.errors


def image_at(url: str) -> Image.Image:
    assert "/inputs/" in url, url  # the page sent a data URI; the server stored it by hash
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    return Image.open(io.BytesIO(response.content))


def test_phone_width(server: Any, open_page: Any) -> None:
    page, console = open_page(server.url, PHONE)
    fill_fast(page, "a phone-sized test")
    page.click("#generate")
    wait_done(page)
    gallery_widths(page)
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px at 390 px"
    page.screenshot(path=str(SHOTS / "phone-generated.png"), full_page=True)
    page.click("#tab-history")
    page.locator(".task-row").first.wait_for()
    assert page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth") <= 0
    page.screenshot(path=str(SHOTS / "phone-history.png"), full_page=True)
    assert console.errors == [], console.errors


def test_api_key_prompt_queue_full_and_delete_range(make_server: Any, open_page: Any) -> None:
    server = make_server("--api-key", "k", "--queue-size", "1").start()
    check_page_served_publicly_without_traversal(server.url)
    page, console = open_page(server.url)
    # The first calls get 401: the page asks for the key.
    notice = page.locator("#notice")
    notice.wait_for(state="visible")
    assert "API key" in notice.text_content()
    assert page.evaluate("() => document.getElementById('key-box').open")
    page.screenshot(path=str(SHOTS / "desktop-api-key-prompt.png"))

    # A wrong key: 403, said in words.
    page.fill("#api-key", "wrong")
    page.click("#key-save")
    page.wait_for_function("() => document.getElementById('notice').textContent.includes('refused')")

    page.fill("#api-key", "k")
    page.click("#key-save")
    page.wait_for_selector("#style-list .style-item")
    assert page.is_hidden("#notice")
    assert page.evaluate("() => localStorage.getItem('fooocus-es.apiKey')") == "k"
    fill_fast(page, "with a key")
    page.click("#generate")
    wait_done(page)
    assert gallery_widths(page) == [64]  # signed result URLs load in <img> without the header
    task_id = task_id_of(page)

    # A full queue (one long task running, one pending, queue size 1): the 429 is said in words.
    key = {"X-API-KEY": "k"}
    long_task = {"prompt": "long", "aspect_ratios_selection": "256*256", "overwrite_step": 200}
    running = submit(server.url, long_task, key)
    wait_for(server.url, running, key, until="running")
    pending = submit(server.url, long_task, key)
    page.click("#generate")
    error = page.locator("#form-error")
    error.wait_for(state="visible")
    assert "queue is full" in error.text_content() and "Retry in" in error.text_content()
    assert page.text_content("#task-status") == "error"
    requests.post(f"{server.url}/tasks/{pending}/cancel", headers=key, timeout=10)
    requests.post(f"{server.url}/tasks/{running}/cancel", headers=key, timeout=10)
    wait_for(server.url, running, key)

    # Delete a time range (confirmed) from the history tab.
    page.click("#tab-history")
    page.locator(f'.task-row[data-task-id="{task_id}"]').wait_for()
    page.evaluate(
        "() => { const d = new Date(Date.now() - 3600e3); const p = n => String(n).padStart(2, '0');"
        " document.getElementById('delete-start').value ="
        " `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:00`; }"
    )
    page.click(".delete-range > summary")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete-go")
    page.wait_for_function("() => document.getElementById('delete-result').textContent === 'Deleted 3 tasks.'")
    page.wait_for_function("() => document.querySelector('#history-list .empty') !== null")
    gone = requests.get(f"{server.url}/tasks/{task_id}", headers={"X-API-KEY": "k"}, timeout=10)
    assert gone.status_code == 404

    assert console.others() == [], console.errors
    statuses = console.network_statuses()
    assert statuses and set(statuses) == {401, 403, 429}, console.errors


def test_api_docs_render_offline(server: Any, open_page: Any) -> None:
    """/schema (ReDoc) and /schema/swagger load their scripts from this server, never a CDN."""
    page, _console = open_page(server.url)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    for path, ready in (("/schema/swagger", ".swagger-ui .info .title"), ("/schema", "h1")):
        page.goto(server.url + path)
        page.wait_for_selector(ready, timeout=20_000)
        assert "fooocus-es" in page.inner_text(ready)
        page.screenshot(path=str(SHOTS / f"docs{path.replace('/', '-')}.png"))
    outside = [url for url in requested if not url.startswith((server.url, "data:", "blob:"))]
    assert requested and outside == [], outside
