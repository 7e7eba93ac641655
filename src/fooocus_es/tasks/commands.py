"""What the API asks of runners: typed commands that can cross a process boundary (msgspec, tagged).

`Generate` goes through a CommandQueue (claimed by one runner); `Stop` and `Skip` reach the runner
that runs the task; `Cancel` removes a pending command. Whether a cancel or a start wins is decided
by the log's version check, not by who asked first.
"""

from __future__ import annotations

from typing import Any

import msgspec


class _Command(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    task_id: str


class Generate(_Command, tag="Generate"):
    params: dict[str, Any]  # the normalised request, as TaskQueued logged it
    version: int = 1  # the task's version when it was queued: TaskStarted must follow it


class Stop(_Command, tag="Stop"):
    """End the running task now, keeping the images already made."""


class Skip(_Command, tag="Skip"):
    """Abandon the image being made; the task goes on with the next one."""


class Cancel(_Command, tag="Cancel"):
    """Remove a task that has not started."""


Command = Generate | Stop | Skip | Cancel
Control = Stop | Skip

COMMAND_DECODER = msgspec.json.Decoder(Command)
COMMAND_ENCODER = msgspec.json.Encoder()
