"""Public URLs for stored files, signed when an API key is set so they still work in an <img> tag."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from fooocus_es.media.inputs import IMAGE_FIELDS, TOOL_IMAGE_FIELD


class UrlSigner:
    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = api_key.encode()

    def signature(self, path: str) -> str:
        return hmac.new(self._key, path.lstrip("/").encode(), hashlib.sha256).hexdigest()[:32]

    def verify(self, path: str, signature: str) -> bool:
        return bool(self._key) and hmac.compare_digest(self.signature(path), signature)

    def url(self, path: str) -> str:
        """`path` is relative to the data dir: outputs/... or inputs/..."""
        if not path or "://" in path:
            return path
        url = f"{self.base_url}/{path.lstrip('/')}"
        return f"{url}?sig={self.signature(path)}" if self._key else url

    def render_params(self, params: dict[str, Any]) -> dict[str, Any]:
        rendered = dict(params)
        for name in (*IMAGE_FIELDS, TOOL_IMAGE_FIELD):
            if isinstance(rendered.get(name), str):
                rendered[name] = self.url(rendered[name])
        if isinstance(rendered.get("controlnet_image"), list):
            rendered["controlnet_image"] = [
                {**item, "cn_img": self.url(item.get("cn_img") or "")} for item in rendered["controlnet_image"]
            ]
        return rendered

    def render_record(self, record: dict[str, Any]) -> dict[str, Any]:
        return {
            **record,
            "req_params": self.render_params(record["req_params"]),
            "result": [self.url(path) for path in record.get("result") or []],
        }
