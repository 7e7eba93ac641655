"""fooocus-es serve | replay."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fooocus_es.settings import Settings, settings_from_env


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


def _settings(args: argparse.Namespace) -> Settings:
    keys = ("host", "port", "data_dir", "preset", "api_key", "webhook_url", "base_url", "queue_size", "device")
    return settings_from_env(**{key: getattr(args, key, None) for key in keys})


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from fooocus_es.app import create_app

    settings = _settings(args)
    app = create_app(settings)
    # A short graceful timeout: open progress streams must not hold a restart for 30 s.
    uvicorn.run(app, host=settings.host, port=settings.port, access_log=False, timeout_graceful_shutdown=2)
    return 0


def replay(args: argparse.Namespace) -> int:
    from fooocus_es.events.log import EventLog
    from fooocus_es.projections import records

    settings = _settings(args)
    event_log = EventLog(settings.db_path)
    counted: list[int] = []
    event_log.writer_transaction(lambda db: counted.append(records.rebuild(db, event_log.read())))
    event_log.close()
    print(f"replayed {counted[0]} events into generate_record ({settings.db_path})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fooocus-es", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _serve_args(commands.add_parser("serve", help="run the HTTP server"))
    replay_parser = commands.add_parser("replay", help="rebuild generate_record from the event log")
    replay_parser.add_argument("--data-dir", type=Path)
    args = parser.parse_args(argv)
    return {"serve": serve, "replay": replay}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
