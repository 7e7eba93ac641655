"""SSE framing for naive readers (reference/real-clients.md §1.4), against a real server process.

The RunPod SSE worker and FooocusAPI's docs/example.html strip `data: ` from each chunk they read and
`json.loads` it; these tests read the way they do, from a raw socket and from requests' chunks.
"""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlsplit

import requests
from e2e_helpers import FAST, GENERATE

KEYS = {"progress", "preview", "message", "images"}


def raw_reads(base: str, body: dict, pause: float = 0.0) -> tuple[bytes, list[tuple[float, bytes]]]:
    """POST over a bare socket; returns the response head and, per recv(), its time and body bytes.

    The chunked transfer framing is undone byte by byte, so each read holds exactly the body bytes
    that arrived in that recv(): what a client reading "chunks" off the wire gets. `pause` is the
    client's own work per read (decoding, forwarding), during which the next events pile up unpaced.
    """
    url = urlsplit(base)
    payload = json.dumps({**FAST, **body, "stream_output": True}).encode()
    request = (
        f"POST {GENERATE} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    ).encode() + payload
    arrivals: list[tuple[float, bytes]] = []
    with socket.create_connection((url.hostname, url.port), timeout=60) as sock:
        sock.sendall(request)
        while data := sock.recv(1 << 20):
            arrivals.append((time.monotonic(), data))
            time.sleep(pause)
    wire = b"".join(data for _, data in arrivals)
    head, _, chunked = wire.partition(b"\r\n\r\n")
    owner = [i for i, (_, data) in enumerate(arrivals) for _ in data][len(head) + 4 :]  # recv index per byte
    body_reads: dict[int, bytearray] = {}
    pos = 0
    while True:
        line_end = chunked.index(b"\r\n", pos)
        size = int(chunked[pos:line_end], 16)
        start = line_end + 2
        if size == 0:
            break
        for offset in range(start, start + size):
            body_reads.setdefault(owner[offset], bytearray()).append(chunked[offset])
        pos = start + size + 2
    return head, [(arrivals[i][0], bytes(data)) for i, data in sorted(body_reads.items())]


def parse_read(read: bytes) -> dict:
    """A naive client's parse: strip a leading `data: `, json.loads the rest; must be one object."""
    assert read.startswith(b"data: ") and read.endswith(b"\r\n\r\n"), read[:80]
    event = json.loads(read[len(b"data: ") :])
    assert isinstance(event, dict) and set(event) >= KEYS
    return event


def check_event(event: dict) -> None:
    assert isinstance(event["progress"], int) and 0 <= event["progress"] <= 100
    assert event["preview"] is None or event["preview"].startswith("data:image/")
    assert isinstance(event["message"], str) and isinstance(event["images"], list)


def test_every_read_off_the_socket_is_one_whole_event_and_the_last_is_finished(server) -> None:
    head, reads = raw_reads(server.url, {"prompt": "one event per read"}, pause=0.03)
    assert head.startswith(b"HTTP/1.1 200") and b"content-type: text/event-stream" in head.lower()
    events = [parse_read(read) for _, read in reads]
    for event in events:
        check_event(event)
    assert len(events) >= 2 and all(e["message"] != "Finished" for e in events[:-1])
    final = events[-1]
    assert final == {**final, "progress": 100, "preview": None, "message": "Finished"}
    assert len(final["images"]) == 1 and final["images"][0].startswith(server.url + "/outputs/")
    assert requests.get(final["images"][0], timeout=10).status_code == 200


def test_each_chunk_is_a_single_data_field_with_nothing_before_it(server) -> None:
    response = requests.post(
        server.url + GENERATE, json={**FAST, "prompt": "data first", "stream_output": True}, stream=True, timeout=60
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = list(response.iter_content(chunk_size=None))
    for chunk in chunks:
        lines = chunk.split(b"\r\n")
        assert lines[0].startswith(b"data: {") and lines[1:] == [b"", b""], chunk[:80]  # no event:/id:/retry:
        check_event(json.loads(chunk.removeprefix(b"data: ")))
    assert json.loads(chunks[-1][6:])["message"] == "Finished"


def test_a_non_ascii_prompt_streams_ascii_only_bytes(server) -> None:
    response = requests.post(
        server.url + GENERATE,
        json={**FAST, "prompt": "café ☕ naïve 🙂", "stream_output": True},
        stream=True,
        timeout=60,
    )
    body = b"".join(response.iter_content(chunk_size=None))
    assert body.isascii()
    assert json.loads(body.rsplit(b"data: ", 1)[1])["message"] == "Finished"
    record = requests.get(f"{server.url}/tasks/{response.headers['x-task-id']}", timeout=10).json()
    assert record["req_params"]["prompt"] == "café ☕ naïve 🙂"


def test_stream_rate_spaces_the_events_and_still_ends_with_finished(make_server) -> None:
    server = make_server("--stream-rate", "2").start()
    body = {"performance_selection": "Speed", "aspect_ratios_selection": "64*64", "overwrite_step": 30}
    _, reads = raw_reads(server.url, {**body, "prompt": "slow stream"})
    events = [parse_read(read) for _, read in reads]
    assert events[-1]["message"] == "Finished" and events[-1]["progress"] == 100
    assert len(events) >= 3  # the task runs long enough for progress between the first and the final
    times = [at for at, _ in reads]
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    assert min(gaps) > 0.4, gaps  # 1 / 2 per second, less scheduling slack
