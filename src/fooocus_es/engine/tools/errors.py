"""Why a tool cannot run here (the API answers 501 with the message)."""

from __future__ import annotations


class ToolUnavailable(Exception):
    """An optional package the tool needs is not installed; the message says how to install it."""
