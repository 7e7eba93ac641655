"""One Settings struct, filled from command-line flags and FOOOCUS_ES_* environment variables."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

import msgspec

ENV_PREFIX = "FOOOCUS_ES_"
DEVICE_NAME = re.compile(r"^(auto|cpu|cuda|cuda:\d+|mps)$")


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 7866
    data_dir: Path = Path(".")
    preset: str = "default"
    api_key: str = ""
    webhook_url: str = ""
    base_url: str = ""  # what result URLs start with; empty: http://{host}:{port}
    queue_size: int = 100
    device: Literal["auto", "cpu", "cuda"] = "auto"
    download_models: bool = True  # fetch a preset's missing model files at start-up
    allow_private_fetch: bool = False  # let image URLs point at private/loopback hosts
    webhook_retries: int = 3
    webhook_timeout_s: float = 5.0
    torch_threads: int = 0  # 0: leave torch's default
    model_cache_mb: int | None = None  # loaded models kept within this many MiB; None/0: one checkpoint at a time
    # A blocking generate (both flags false): image bytes (the seed's rule) or the record as JSON
    # (FooocusAPI since 2024-07); `Accept: application/json` always gets JSON.
    sync_response: Literal["image", "json"] = "image"
    stream_rate: Annotated[float, msgspec.Meta(gt=0, le=1000)] = 10.0  # progress events a second on a stream
    cors_origins: str = ""  # "" = local pages (any origin with an API key); "*" or a comma-separated list
    # Host names served besides localhost, the bind address and the base URL's (a guard against DNS
    # rebinding, see api/hosts.py); comma-separated, "*" any. "": any host with a key or a wildcard bind.
    allowed_hosts: str = ""
    # Webhook safety: loopback, private, link-local and multicast receivers need the opt-in; with a
    # secret every delivery carries an HMAC-SHA256 signature (subscribers/webhook_signature.py).
    allow_private_webhooks: bool = False
    webhook_secret: str = ""
    # Fleet (README "Fleet"): the log, the command queue and the files on NATS JetStream.
    log_url: str = ""  # "": SQLite in the data dir; nats://HOST:PORT: the fleet's JetStream
    pool: str = "default"  # the runners' pool: one shared queue consumer each
    runner: bool = True  # run a runner in this process (--no-runner: an API node only)
    retry_interrupted: Annotated[int, msgspec.Meta(ge=0, le=5)] = 1  # re-runs when a task's runner went away
    ack_wait_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0  # silence after which a runner's task is taken over
    # Storage faults and admission budgets (issue 15): how long a write waits for another process's
    # lock on the database; image decoding across requests (concurrent decodes) and within one
    # (total megapixels over all image fields).
    db_busy_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    max_concurrent_decodes: Annotated[int, msgspec.Meta(ge=1)] = 2
    max_request_megapixels: Annotated[float, msgspec.Meta(gt=0)] = 64.0
    # One runner per device on the same queue ("cuda:0,cuda:1"); "": the one `device`.
    devices: str = ""
    # The history table (README "Shared read model"): "" SQLite in the data dir, postgresql://... one
    # PostgreSQL database that several API nodes share.
    read_model_url: str = ""
    # Images of one task denoised as rows of one batch, this many per UNet call (engine/diffusion/
    # batching.py); 1: one image after another, the single-image pipeline calls; 0: by the device
    # (1 on a CPU, by memory on CUDA: auto_max_batch).
    max_batch: Annotated[int, msgspec.Meta(ge=0)] = 0
    # Fleet: copies of every stream and bucket this node creates (3 on a 3-node NATS cluster: one
    # server may die without losing a write). An existing stream keeps its own count (a warning says so).
    replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1
    # torch.compile of each loaded UNet, checked against eager on each new shape (engine/models/
    # compile.py); its cache in <data-dir>/cache/torch-compile. For CUDA; "off": eager.
    compile_mode: Literal["off", "default", "max-autotune"] = "off"

    def __post_init__(self) -> None:
        for name in self.devices.split(","):
            if name.strip() and not DEVICE_NAME.match(name.strip()):
                raise ValueError(f"devices: {name.strip()!r} is not a device (cpu, cuda, cuda:N, mps or auto)")

    @property
    def fleet(self) -> bool:
        return self.log_url.startswith(("nats://", "tls://"))

    # Derived locations: the design card puts outputs/ and inputs/ beside each other.
    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"

    @property
    def inputs_dir(self) -> Path:
        return self.data_dir / "inputs"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def db_path(self) -> Path:
        return self.outputs_dir / "db.sqlite3"

    @property
    def public_base_url(self) -> str:
        """FooocusAPI's --base-url rule: with a scheme it is used as is, else http://{base}:{port}."""
        base = self.base_url or ("127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host)
        if "://" in base:
            return base.rstrip("/")
        return f"http://{base}:{self.port}"


def settings_from_env(environ: dict[str, str] | None = None, **overrides: object) -> Settings:
    """Environment first, then explicit overrides (the CLI passes the flags it was given)."""
    environ = dict(os.environ if environ is None else environ)
    fields: dict[str, object] = {}
    for name in Settings.__struct_fields__:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None:
            fields[name] = raw
    fields.update({k: v for k, v in overrides.items() if v is not None})
    # strict=False lets "7866" and "true" from the environment become int and bool.
    return msgspec.convert(fields, Settings, strict=False, dec_hook=_dec_hook)


def _dec_hook(tp: type, value: object) -> object:
    if tp is Path and isinstance(value, (str, Path)):
        return Path(value)
    raise TypeError(f"cannot convert {value!r} to {tp}")
