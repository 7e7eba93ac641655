"""The stream's pacer (pure, time passed in), its async loop on a real anyio stream, and the framing."""

from __future__ import annotations

import json

import anyio
import pytest

from fooocus_es.api.sse import Pacer, ascii_json, paced_progress, sse_event
from fooocus_es.api.structs import StreamMessage
from fooocus_es.events.types import Envelope, TaskFinished, TaskProgress


def msg(progress: int, preview: str | None = None, message: str = "") -> StreamMessage:
    return StreamMessage(progress=progress, preview=preview, message=message or f"step {progress}", images=[])


def test_a_first_message_goes_at_once_and_a_burst_collapses_to_the_newest() -> None:
    pacer = Pacer(0.1)
    assert pacer.due() is None  # nothing pending: nothing to wait for
    pacer.offer(msg(2))
    assert pacer.due() <= 0.0  # after a quiet interval, at once
    assert pacer.take(0.0).progress == 2
    for progress in (13, 20, 27, 34):
        pacer.offer(msg(progress))
    assert pacer.due() == pytest.approx(0.1)
    sent = pacer.take(0.1)
    assert sent.progress == 34 and sent.message == "step 34"
    assert pacer.due() is None


def test_the_newest_preview_of_the_interval_is_kept() -> None:
    pacer = Pacer(0.5)
    pacer.offer(msg(1))
    pacer.take(0.0)
    pacer.offer(msg(20, "data:image/jpeg;base64,AAA"))
    pacer.offer(msg(27, "data:image/jpeg;base64,BBB"))
    pacer.offer(msg(100, None, "Saving image 1/1 ..."))  # the newest carries none: keep BBB
    sent = pacer.take(0.5)
    assert (sent.progress, sent.preview, sent.message) == (100, "data:image/jpeg;base64,BBB", "Saving image 1/1 ...")
    pacer.offer(msg(100, None, "Saving image 2/2 ..."))  # a new interval does not inherit it
    assert pacer.take(1.0).preview is None


def test_the_final_waits_one_interval_after_the_last_write() -> None:
    pacer = Pacer(0.25)
    assert pacer.final_due() == float("-inf")  # nothing written yet: the final goes at once
    pacer.offer(msg(13))
    pacer.take(3.0)
    assert pacer.final_due() == pytest.approx(3.25)


def envelope(seq: int, percent: int, message: str, preview: str | None = None) -> Envelope:
    return Envelope(seq, TaskProgress(task_id="t", at_ms=0, percent=percent, message=message, preview=preview))


async def _collect(receive, ended: anyio.Event, pacer: Pacer) -> list[tuple[float, StreamMessage]]:
    got = [(anyio.current_time(), m) async for m in paced_progress(receive, ended, pacer)]
    return [*got, (max(pacer.final_due(), anyio.current_time()), msg(100, None, "Finished"))]


def test_the_loop_paces_a_burst_flushes_the_last_message_and_spaces_the_final() -> None:
    async def main() -> list[tuple[float, StreamMessage]]:
        send, receive = anyio.create_memory_object_stream[Envelope](64)
        ended = anyio.Event()

        async def runner() -> None:
            for step in range(1, 11):  # ten events in ~50 ms: the first goes, then the newest of the rest
                send.send_nowait(envelope(step, step * 9, f"s{step}", f"data:image/jpeg;base64,{step}"))
                await anyio.sleep(0.005)
            await anyio.sleep(0.3)
            send.send_nowait(envelope(11, 99, "saving"))  # pending when the task ends: still sent
            ended.set()  # as the waiters listener does, before subscribers get the terminal event
            send.send_nowait(Envelope(12, TaskFinished(task_id="t", at_ms=0, result=[])))

        async with anyio.create_task_group() as tg:
            tg.start_soon(runner)
            return await _collect(receive, ended, Pacer(0.2))

    got = anyio.run(main)
    assert [m.message for _, m in got] == ["s1", "s10", "saving", "Finished"]
    assert got[1][1].preview == "data:image/jpeg;base64,10" and got[2][1].preview is None
    times = [t for t, _ in got]
    assert all(b - a >= 0.2 - 1e-3 for a, b in zip(times, times[1:], strict=False)), times


def test_the_loop_takes_in_what_is_buffered_when_the_task_has_ended() -> None:
    async def main() -> list[tuple[float, StreamMessage]]:
        send, receive = anyio.create_memory_object_stream[Envelope](64)
        ended = anyio.Event()
        for step in range(1, 4):
            send.send_nowait(envelope(step, step * 30, f"s{step}", "data:image/png;base64,A" if step == 2 else None))
        ended.set()  # no terminal event in the stream: as if lost to a deadline
        return await _collect(receive, ended, Pacer(0.05))

    got = anyio.run(main)
    assert [m.message for _, m in got] == ["s3", "Finished"]  # all buffered at once: the newest goes
    assert got[0][1].preview == "data:image/png;base64,A"


def test_a_cut_off_subscriber_stops_at_once() -> None:
    async def main() -> list[StreamMessage]:
        send, receive = anyio.create_memory_object_stream[Envelope](4)
        send.close()  # what Bus.unsubscribe does to a lagging subscriber
        return [m async for m in paced_progress(receive, anyio.Event(), Pacer(0.1))]

    assert anyio.run(main) == []


@pytest.mark.parametrize(
    "value",
    [
        {"message": "café ☕ — naïve", "images": []},
        {"emoji": "🙂 astral 𝄞", "nested": ["ü", {"k": "\u2028"}]},
        {"plain": "ascii only", "quote": 'a "b" \\ c\n'},
    ],
)
def test_ascii_json_matches_json_dumps_ensure_ascii(value: dict) -> None:
    encoded = ascii_json(value)
    assert encoded.isascii()
    assert json.loads(encoded) == value
    assert encoded == json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode()


def test_an_event_is_data_first_and_one_blank_line() -> None:
    event = sse_event(StreamMessage(progress=5, preview=None, message="café", images=[]))
    assert event == b'data: {"progress":5,"preview":null,"message":"caf\\u00e9","images":[]}\r\n\r\n'
