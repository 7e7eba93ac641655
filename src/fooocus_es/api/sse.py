"""FooocusAPI's SSE stream, framed for the strictest readers (reference/real-clients.md §1.4).

Naive clients (the RunPod SSE worker, FooocusAPI's docs/example.html) strip a leading `data: ` from
each chunk they read and `json.loads` it; two events in one read, or a non-ASCII byte split across
reads, stalls them. So each event is a single write of `data: <ASCII JSON>` and a blank line, and
writes are paced: at most one progress event per interval, so on loopback no two events share a read.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream

from fooocus_es.api.structs import StreamMessage
from fooocus_es.events.types import Envelope, TaskProgress, is_terminal

_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # astral characters become a surrogate pair, as json.dumps writes them
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def ascii_json(message: Any) -> bytes:
    """msgspec's JSON with non-ASCII escaped as \\uXXXX (like json.dumps' ensure_ascii).

    msgspec writes non-ASCII characters only inside strings, so escaping them afterwards is exact;
    the usual event (base64 previews, URLs) is ASCII already and skips the regex.
    """
    raw = msgspec.json.encode(message)
    if raw.isascii():
        return raw
    return _NON_ASCII.sub(_escape, raw.decode()).encode("ascii")


def sse_event(message: Any) -> bytes:
    """One whole event: `data: ` first, no other field lines, CRLF blank line (the framing §1.4 gives)."""
    return b"data: " + ascii_json(message) + b"\r\n\r\n"


def progress_message(event: TaskProgress) -> StreamMessage:
    percent = min(100, max(0, event.percent))
    return StreamMessage(progress=percent, preview=event.preview, message=event.message, images=[])


@dataclass
class Pacer:
    """What a stream writes and when, given the progress messages it is offered. Pure: time is passed in.

    At most one progress message per `interval`: within an interval the newest message wins, with
    the newest preview seen in that interval (FooocusAPI only ever shows the newest one). A message
    offered after a quiet interval goes at once. So nothing is lost but what a newer message
    supersedes: the last progress message, and at least one preview if any came, always go out.
    The final message goes one interval after the last write, so it never shares a read with it.
    """

    interval: float  # seconds, 1 / stream_rate
    _pending: StreamMessage | None = field(default=None, init=False)
    _preview: str | None = field(default=None, init=False)  # newest preview since the last write
    _last_write: float = field(default=-math.inf, init=False)

    def offer(self, message: StreamMessage) -> None:
        self._pending = message
        if message.preview is not None:
            self._preview = message.preview

    def due(self) -> float | None:
        """When the pending message may be written; None when nothing is pending."""
        return None if self._pending is None else self._last_write + self.interval

    def take(self, now: float) -> StreamMessage:
        """The message to write now (call once `due() <= now`); starts the next interval."""
        assert self._pending is not None
        message = msgspec.structs.replace(self._pending, preview=self._preview)
        self._pending, self._preview, self._last_write = None, None, now
        return message

    def final_due(self) -> float:
        """When the final message may be written (after the pending one, if any, went)."""
        return self._last_write + self.interval


def _take_in(pacer: Pacer, envelope: Envelope) -> bool:
    """Offers a progress event to the pacer; True when the event ends the task."""
    if isinstance(envelope.event, TaskProgress):
        pacer.offer(progress_message(envelope.event))
        return False
    return is_terminal(envelope.event)


def _drain(receive: MemoryObjectReceiveStream[Envelope], pacer: Pacer) -> None:
    """Takes in what is already buffered, up to the terminal event."""
    while True:
        try:
            envelope = receive.receive_nowait()
        except (anyio.WouldBlock, anyio.EndOfStream):
            return
        if _take_in(pacer, envelope):
            return


async def paced_progress(
    receive: MemoryObjectReceiveStream[Envelope], ended: anyio.Event, pacer: Pacer
) -> AsyncIterator[StreamMessage]:
    """Yields the task's progress messages as the pacer allows, until the task ends; then the last one.

    Receiving goes on while a message waits for its slot, so the bus buffer never fills up with
    stale progress. A receive cut short by the deadline may lose the item it was being handed: a
    progress event is superseded soon enough, and a lost terminal one is covered by `ended` (set by
    a bus listener before subscribers get the event). The bus cutting this subscriber off for
    lagging also ends the loop; the caller then waits for `ended`.
    """
    finished = False
    while not finished or pacer.due() is not None:
        now, due = anyio.current_time(), pacer.due()
        if due is not None and due <= now:
            yield pacer.take(now)  # outside the cancel scope below: never yield inside one
        elif finished and due is not None:
            await anyio.sleep(due - now)  # the task ended: the newest message still gets its slot
        else:
            with anyio.move_on_after(math.inf if due is None else due - now):
                try:
                    finished = _take_in(pacer, await receive.receive())
                except anyio.EndOfStream:  # the bus cut us off (or we unsubscribed)
                    finished = True
            if ended.is_set() and not finished:
                _drain(receive, pacer)
                finished = True


async def sleep_until(deadline: float) -> None:
    await anyio.sleep(max(0.0, deadline - anyio.current_time()))
