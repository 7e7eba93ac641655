"""fooocus-es serve | generate | models | tasks | replay."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import msgspec

from fooocus_es.engine.models import catalog
from fooocus_es.settings import ENV_PREFIX, Settings, settings_from_env

DEFAULT_SERVER = "http://127.0.0.1:7866"


def _serve_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 7866)")
    parser.add_argument("--data-dir", type=Path, help="where outputs/, inputs/ and models/ live (default: .)")
    parser.add_argument("--preset", help="server preset: default, demo, or a file in <data-dir>/presets")
    parser.add_argument("--api-key", help="require this X-API-KEY on every route")
    parser.add_argument("--webhook-url", help="webhook for tasks that name none")
    parser.add_argument("--base-url", help="what result URLs start with (host or full URL)")
    parser.add_argument("--queue-size", type=int, help="pending tasks accepted before 429 (default 100)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="torch device (default auto)")
    _devices_arg(parser)
    parser.add_argument(
        "--sync-response",
        choices=["image", "json"],
        help="what a blocking generate (both flags false) answers: image bytes (default, the seed's rule) "
        "or the task record as JSON (FooocusAPI since July 2024)",
    )
    parser.add_argument("--stream-rate", type=float, help="at most this many progress events a second (default 10)")
    parser.add_argument(
        "--cors-origins",
        help="comma-separated CORS origins, or '*' (default: local pages; any origin once an API key is set)",
    )
    parser.add_argument(
        "--allowed-hosts",
        help="comma-separated Host names served besides localhost, the bind address and --base-url's, or '*' "
        "(default: those only, unless an API key is set or the bind address is 0.0.0.0/::)",
    )
    parser.add_argument(
        "--allow-private-webhooks",
        action="store_true",
        default=None,
        help="let webhooks reach loopback, private, link-local and multicast addresses (default: refused)",
    )
    parser.add_argument(
        "--webhook-secret",
        help=f"sign every webhook with HMAC-SHA256 under this secret (better: ${ENV_PREFIX}WEBHOOK_SECRET)",
    )
    _fleet_args(parser)
    no_runner = "an API node only: no runner in this process (the fleet's runners run the tasks)"
    parser.add_argument("--no-runner", dest="runner", action="store_false", default=None, help=no_runner)
    parser.add_argument("--db-busy-timeout", dest="db_busy_timeout_s", type=float,
                        help="seconds a write waits for another process's database lock (default 10)")
    parser.add_argument("--max-concurrent-decodes", type=int,
                        help="request images decoded at once across all requests (default 2; more wait, then 429)")
    parser.add_argument("--max-request-megapixels", type=float,
                        help="total megapixels over one request's image fields (default 64; more is a 413)")
    _max_batch_arg(parser)
    _read_model_arg(parser)


def _max_batch_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-batch", type=int,
                        help="images of one task denoised together per UNet call (default 1: one after another)")
    parser.add_argument("--compile", dest="compile_mode", choices=["off", "default", "max-autotune"],
                        help="torch.compile each loaded UNet, checked against eager per shape (default off; "
                        "for CUDA: max-autotune adds CUDA graphs)")


def _read_model_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--read-model", dest="read_model_url",
                        help="the history table: postgresql://USER@HOST:PORT/DATABASE, shared by API nodes "
                        "(default: SQLite in the data dir)")


def _devices_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--devices", help="one runner per device on the same queue, comma-separated: cuda:0,cuda:1 (default: --device)"
    )


def _fleet_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log", dest="log_url", help="the fleet's NATS JetStream, nats://HOST:PORT (default: SQLite)")
    parser.add_argument("--pool", help="the runners' pool, one queue each (default: default)")
    parser.add_argument(
        "--retry-interrupted", type=int, help="re-runs of a task whose runner went away, then failed (default 1)"
    )
    parser.add_argument("--ack-wait", dest="ack_wait_s", type=float, help="seconds of silence before a takeover")
    parser.add_argument(
        "--replicas",
        type=int,
        help="copies of each stream and bucket this node creates, 1-5 (default 1; 3 on a 3-node cluster)",
    )


def _settings(args: argparse.Namespace) -> Settings:
    keys = (
        "host", "port", "data_dir", "preset", "api_key", "webhook_url", "base_url", "queue_size", "device",
        "sync_response", "stream_rate", "cors_origins", "allowed_hosts",
        "allow_private_webhooks", "webhook_secret", "log_url", "pool", "runner", "retry_interrupted",
        "ack_wait_s",
        "db_busy_timeout_s", "max_concurrent_decodes", "max_request_megapixels",
        "devices", "read_model_url", "max_batch", "replicas", "compile_mode",
    )  # fmt: skip
    try:
        return settings_from_env(**{key: getattr(args, key, None) for key in keys})
    except msgspec.ValidationError as exc:  # one line naming the setting, not a traceback
        raise CliError(f"invalid setting: {exc}", code=2) from exc


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from fooocus_es.app import create_app
    from fooocus_es.projections.records import ReadModelUnavailable

    settings = _settings(args)
    _check_webhook_url(settings.webhook_url)
    _check_read_model_url(settings.read_model_url)
    try:
        app = create_app(settings)
    except ReadModelUnavailable as exc:  # before the SQLite branch: it is an OSError too
        print(f"fooocus-es: {exc}", file=sys.stderr)
        return 2
    except (sqlite3.Error, OSError) as exc:  # no task log at all: nothing could be served; say why in one line
        print(f"fooocus-es: cannot open the task log {settings.db_path}: {exc}", file=sys.stderr)
        return 2
    # A short graceful timeout: open progress streams must not hold a restart for 30 s.
    uvicorn.run(app, host=settings.host, port=settings.port, access_log=False, timeout_graceful_shutdown=2)
    return 0


def _check_webhook_url(url: str) -> None:
    """The server-wide webhook passes the same URL check as a request's, before the server starts."""
    from fooocus_es.net.address_guard import RefusedURL, parse_http_url

    if not url:
        return
    try:
        parse_http_url(url)
    except RefusedURL as exc:
        raise CliError(f"--webhook-url ({ENV_PREFIX}WEBHOOK_URL) {url!r}: {exc}", code=2) from exc


def _check_read_model_url(url: str) -> None:
    from fooocus_es.projections.records import check_read_model_url

    try:
        check_read_model_url(url)
    except ValueError as exc:
        raise CliError(str(exc), code=2) from exc


def runner(args: argparse.Namespace) -> int:
    from fooocus_es.runner.process import run_runner

    settings = _settings(args)
    if not settings.fleet:
        raise CliError("a runner process needs the fleet's log: --log nats://HOST:PORT (or FOOOCUS_ES_LOG_URL)")
    run_runner(settings)
    return 0


def replay(args: argparse.Namespace) -> int:
    from fooocus_es.events.sqlite import SqliteEventLog
    from fooocus_es.projections.records import ReadModelUnavailable, open_read_model, redacted

    settings = _settings(args)
    _check_read_model_url(settings.read_model_url)
    event_log = SqliteEventLog(settings.db_path)
    try:
        read_model = open_read_model(settings.read_model_url, settings.db_path)
        count = read_model.rebuild(event_log)
    except ReadModelUnavailable as exc:
        raise CliError(str(exc), code=2) from exc
    finally:
        event_log.close()
    read_model.close()
    where = redacted(settings.read_model_url) if settings.read_model_url else settings.db_path
    print(f"replayed {count} events into generate_record ({where})")
    return 0


# -- shared client bits ----------------------------------------------------------------------------------
class CliError(Exception):
    """A failure to report as one `error: ...` line and a non-zero exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class ProgressBar:
    """One self-rewriting line on stderr: [#####.....]  42% message."""

    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self._shown = 0

    def update(self, percent: float, message: str = "") -> None:
        percent = max(0.0, min(100.0, percent))
        filled = int(self.width * percent / 100)
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {percent:3.0f}% {message}".rstrip()
        padding = " " * max(0, self._shown - len(line))
        self.stream.write(f"\r{line}{padding}")
        self.stream.flush()
        self._shown = len(line)

    def close(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = 0


def _client_args(parser: argparse.ArgumentParser, *, server_help: str) -> None:
    parser.add_argument("--server", help=server_help)
    parser.add_argument("--api-key", help=f"the server's API key (default: ${ENV_PREFIX}API_KEY)")


def _headers(api_key: str | None) -> dict[str, str]:
    key = api_key if api_key is not None else os.environ.get(f"{ENV_PREFIX}API_KEY", "")
    return {"X-API-KEY": key} if key else {}


def _detail(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or response.reason_phrase
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("error") or body)
    return str(body)


def _size(value: int) -> str:
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


# -- generate --------------------------------------------------------------------------------------------
def _generate_body(args: argparse.Namespace, *, remote: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": args.prompt, "stream_output": True}
    if args.preset and remote:
        body["preset"] = args.preset  # in-process, the preset is the server's own
    if args.performance:
        body["performance_selection"] = args.performance
    if args.aspect:
        body["aspect_ratios_selection"] = args.aspect.lower().replace("x", "*")
    if args.n is not None:
        body["image_number"] = args.n
    if args.seed is not None:
        body["image_seed"] = args.seed
    if args.negative is not None:
        body["negative_prompt"] = args.negative
    if args.format:
        body["output_format"] = args.format
    return body


def _stream_task(base: str, headers: dict[str, str], body: dict[str, Any], bar: ProgressBar) -> dict[str, Any]:
    """POST with stream_output; the bar follows the progress messages; returns the final message."""
    import httpx

    last: dict[str, Any] | None = None
    # No read timeout: a pending task sends nothing until it starts, however long the queue is.
    timeout = httpx.Timeout(30.0, read=None)
    try:
        with httpx.stream("POST", f"{base}/v1/engine/generate/", json=body, headers=headers, timeout=timeout) as reply:
            if reply.status_code >= 400:
                reply.read()
                raise CliError(f"the server refused the task ({reply.status_code}): {_detail(reply)}", code=2)
            task_id = reply.headers.get("x-task-id", "")
            bar.update(0, f"queued {task_id}")
            for line in reply.iter_lines():
                if not line.startswith("data: "):
                    continue
                last = json.loads(line[len("data: ") :])
                bar.update(float(last.get("progress") or 0), str(last.get("message") or ""))
    except httpx.HTTPError as exc:
        raise CliError(f"cannot talk to {base}: {exc}") from exc
    finally:
        bar.close()
    if last is None:
        raise CliError("the server closed the stream without a result")
    return last


def _download(urls: list[str], out_dir: Path, headers: dict[str, str]) -> list[Path]:
    import httpx

    out_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    for url in urls:
        name = Path(urlsplit(url).path).name or "image.png"
        target = out_dir / name
        stem, suffix, number = target.stem, target.suffix, 1
        while target.exists():
            target = out_dir / f"{stem}-{number}{suffix}"
            number += 1
        try:
            response = httpx.get(url, headers=headers, timeout=60.0)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot download {url}: {exc}") from exc
        if response.status_code != 200:
            raise CliError(f"cannot download {url} ({response.status_code}): {_detail(response)}")
        target.write_bytes(response.content)
        saved.append(target)
    return saved


def _run_generation(base: str, headers: dict[str, str], body: dict[str, Any], out_dir: Path) -> int:
    final = _stream_task(base, headers, body, ProgressBar())
    message = str(final.get("message", ""))
    paths = _download(list(final.get("images") or []), out_dir, headers)
    for path in paths:
        print(path)
    if message != "Finished":
        error = final.get("error") or {}
        detail = f"{error.get('type')}: {error.get('message')}" if error else message
        raise CliError(f"the task did not finish: {detail}")
    return 0


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _quiet_logs() -> None:
    """In-process runs print file paths on stdout: the server's logs go to stderr, warnings and up."""
    import logging

    import structlog

    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    for name in ("litestar", "uvicorn", "uvicorn.error", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("diffusers", "transformers"):  # their dtype and version notices are not for CLI users
        logging.getLogger(name).setLevel(logging.ERROR)


def _fetch_preset_models(settings: Settings) -> None:
    """Missing files of the preset, downloaded in the foreground with a bar (the server would do it silently)."""
    from fooocus_es.engine.planning import presets

    try:
        preset = presets.load_preset(settings.preset, settings.data_dir)
    except presets.PresetError as exc:
        raise CliError(str(exc), code=2) from exc
    missing = catalog.missing_downloads(preset, settings.models_dir)
    if not missing:
        return
    if not settings.download_models:
        names = ", ".join(item.name for item in missing)
        raise CliError(f"preset {settings.preset!r} needs {names}; run `fooocus-es models download NAME`")
    for item in missing:
        _download_model(settings.models_dir, item.name, item.url, item.kind)


@contextmanager
def _local_server(args: argparse.Namespace) -> Iterator[tuple[str, Settings]]:
    """The real app on a free loopback port, in a background thread, for one command."""
    import uvicorn

    from fooocus_es.app import create_app

    sock = _free_socket()
    port = sock.getsockname()[1]
    settings = settings_from_env(
        data_dir=args.data_dir or Path("."), preset=args.preset, device=args.device, host="127.0.0.1", port=port
    )
    _fetch_preset_models(settings)
    # Downloads are done (or refused) above; result URLs must point at this loopback server.
    settings = msgspec.structs.replace(settings, download_models=False, base_url="")
    app = create_app(settings)
    _quiet_logs()
    config = uvicorn.Config(app, access_log=False, log_level="warning", timeout_graceful_shutdown=2, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="local-server", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise CliError("the in-process server did not start (see the messages above)")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", settings
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()


def generate(args: argparse.Namespace) -> int:
    out_dir = args.output or Path(".")
    if args.server:
        base = args.server.rstrip("/")
        return _run_generation(base, _headers(args.api_key), _generate_body(args, remote=True), out_dir)
    with _local_server(args) as (base, settings):
        headers = _headers(args.api_key if args.api_key is not None else settings.api_key)
        return _run_generation(base, headers, _generate_body(args, remote=False), out_dir)


# -- models ----------------------------------------------------------------------------------------------
def _models_dir(args: argparse.Namespace) -> Path:
    return settings_from_env(data_dir=args.data_dir).models_dir


def models_list(args: argparse.Namespace) -> int:
    models_dir = _models_dir(args)
    found = [msgspec.to_builtins(item) for item in catalog.scan(models_dir)]
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    if not found:
        print(f"no models in {models_dir}")
        return 0
    width = max(len(item["name"]) for item in found)
    for item in found:
        print(f"{item['kind']:<12} {item['name']:<{width}}  {_size(item['bytes']):>10}")
    return 0


def models_catalogue(args: argparse.Namespace) -> int:
    """The feature files fetched on first use: where each goes, whether it is there, size, licence, URL."""
    from fooocus_es.engine.planning.file_catalogue import catalogue_files

    models_dir = _models_dir(args)
    rows = [{**msgspec.to_builtins(item), "on_disk": (models_dir / item.path).is_file()} for item in catalogue_files()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(row["path"]) for row in rows)
    for row in rows:
        size = _size(row["approx_bytes"]) if row["approx_bytes"] else "< 1 MB"
        mark = "on disk" if row["on_disk"] else "missing"
        print(f"{row['path']:<{width}}  {size:>10}  {mark:<7}  {row['licence']}  {row['url']}")
    return 0


def _download_model(models_dir: Path, name: str, url: str, kind: str) -> Path:
    from fooocus_es.engine.models.store import ModelMissing, ModelStore

    bar = ProgressBar()
    started = time.monotonic()

    def progress(done: int, total: int | None) -> None:
        rate = done / max(time.monotonic() - started, 1e-6)
        if total:
            bar.update(100 * done / total, f"{name} {_size(done)} / {_size(total)} ({_size(int(rate))}/s)")
        else:
            bar.update(0, f"{name} {_size(done)} ({_size(int(rate))}/s)")

    store = ModelStore(models_dir, device="cpu")
    try:
        target = store.path(kind, name)  # type: ignore[arg-type]
    except ValueError as exc:
        raise CliError(str(exc), code=2) from exc
    if target.exists():
        print(f"{target} is already there", file=sys.stderr)
        return target
    print(f"downloading {name} from {url}", file=sys.stderr)
    try:
        path = store.download(name, url, kind, progress)  # type: ignore[arg-type]
    except ModelMissing as exc:
        raise CliError(str(exc)) from exc
    finally:
        bar.close()
    return path


def models_download(args: argparse.Namespace) -> int:
    settings = settings_from_env(data_dir=args.data_dir)
    url, kind = args.url, args.kind
    if url is None:
        source = catalog.ModelCatalog(settings.models_dir, settings.data_dir).source_of(args.name)
        if source is None:
            raise CliError(f"no preset names {args.name!r}; pass its --url", code=2)
        url, kind = source.url, kind or source.kind
    path = _download_model(settings.models_dir, args.name, url, kind or "checkpoints")
    print(path)
    return 0


# -- tasks -----------------------------------------------------------------------------------------------
def _when(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


def _task_rows(records: list[dict[str, Any]]) -> list[str]:
    rows = []
    for record in records:
        prompt = str((record.get("req_params") or {}).get("prompt", "")).replace("\n", " ")
        prompt = prompt if len(prompt) <= 40 else prompt[:39] + "…"
        rows.append(
            f"{record['task_id']}  {str(record.get('task_status')):<9} {record.get('progress') or 0:>3}%  "
            f"{_when(record.get('in_queue_mills'))}  {len(record.get('result') or []):>2}  {prompt}"
        )
    return rows


def tasks(args: argparse.Namespace) -> int:
    import httpx

    base = (args.server or os.environ.get(f"{ENV_PREFIX}SERVER") or DEFAULT_SERVER).rstrip("/")
    query = {"query": "history", "page_size": args.limit} if args.history else {"query": "all", "page_size": args.limit}
    try:
        response = httpx.get(f"{base}/tasks", params=query, headers=_headers(args.api_key), timeout=30.0)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot talk to {base}: {exc}") from exc
    if response.status_code != 200:
        raise CliError(f"the server answered {response.status_code}: {_detail(response)}", code=2)
    body = response.json()
    sections = ("history",) if args.history else ("current", "pending")
    if args.json:
        print(json.dumps({name: body.get(name, []) for name in sections}, indent=2))
        return 0
    header = f"{'task_id':<32}  {'status':<9} prog  {'queued at':<19}  im  prompt"
    for name in sections:
        records = body.get(name) or []
        print(f"{name} ({len(records)})")
        if records:
            print(header)
            print("\n".join(_task_rows(records)))
    return 0


# -- the parser ------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fooocus-es", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _serve_args(commands.add_parser("serve", help="run the HTTP server"))
    runner_parser = commands.add_parser("runner", help="a fleet runner: tasks from --log nats://..., no HTTP")
    runner_parser.add_argument("--data-dir", type=Path, help="where models/ and the file cache live (default: .)")
    runner_parser.add_argument("--preset", help="the preset whose model is loaded at start")
    runner_parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="torch device (default auto)")
    _devices_arg(runner_parser)
    _max_batch_arg(runner_parser)
    _fleet_args(runner_parser)
    replay_parser = commands.add_parser("replay", help="rebuild generate_record from the event log")
    replay_parser.add_argument("--data-dir", type=Path)
    _read_model_arg(replay_parser)

    gen = commands.add_parser(
        "generate",
        help="generate images (on --server, or in-process)",
        description="Generate images and save them. With --server the task runs on that server; without it the "
        "server runs in this process on a loopback port, over --data-dir, for this one command.",
    )
    gen.add_argument("prompt")
    gen.add_argument("--preset", help="preset (with --server: per request; in-process: the server's)")
    gen.add_argument("--performance", help="Quality, Speed, Extreme Speed, Lightning or Hyper-SD")
    gen.add_argument("--aspect", help="W*H (or WxH), e.g. 1152*896")
    gen.add_argument("-n", type=int, help="number of images (1..32)")
    gen.add_argument("--seed", type=int, help="seed (-1: random)")
    gen.add_argument("--negative", help="negative prompt")
    gen.add_argument("--format", choices=["png", "jpeg", "webp"], help="output format")
    gen.add_argument("-o", "--output", type=Path, help="where to save the images (default: .)")
    gen.add_argument("--data-dir", type=Path, help="in-process: the data dir (default: .)")
    gen.add_argument("--device", choices=["auto", "cpu", "cuda"], help="in-process: torch device")
    _client_args(gen, server_help="a running server, e.g. http://127.0.0.1:7866 (default: run one in-process)")

    models = commands.add_parser("models", help="list or download model files")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    listing = model_commands.add_parser("list", help="checkpoints, LoRAs and VAEs on disk, with sizes")
    listing.add_argument("--data-dir", type=Path)
    listing.add_argument("--json", action="store_true")
    listed = model_commands.add_parser(
        "catalogue", help="image prompt and tool files fetched on first use: place, size, licence, URL"
    )
    listed.add_argument("--data-dir", type=Path)
    listed.add_argument("--json", action="store_true")
    download = model_commands.add_parser("download", help="download a model file (resumes a .part)")
    download.add_argument("name", help="file name, e.g. juggernautXL_v8Rundiffusion.safetensors")
    download.add_argument("--url", help="where from (default: the URL a preset gives for NAME)")
    download.add_argument(
        "--kind", choices=catalog.MODEL_KINDS, help="models sub-folder (default: the preset's, else checkpoints)"
    )
    download.add_argument("--data-dir", type=Path)

    task_parser = commands.add_parser("tasks", help="the queue (current + pending) or the history")
    task_parser.add_argument("--history", action="store_true", help="finished tasks instead of the queue")
    task_parser.add_argument("--json", action="store_true")
    task_parser.add_argument("--limit", type=int, default=20, help="at most this many per list (default 20)")
    _client_args(task_parser, server_help=f"the server (default: ${ENV_PREFIX}SERVER or {DEFAULT_SERVER})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "models":
        handler = {"list": models_list, "catalogue": models_catalogue, "download": models_download}[
            args.models_command
        ]
    else:
        handler = {"serve": serve, "runner": runner, "replay": replay, "generate": generate, "tasks": tasks}[
            args.command
        ]
    try:
        return handler(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
