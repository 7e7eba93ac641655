"""A fleet on one machine: a real nats-server, two API nodes (`serve --log nats://... --no-runner`,
each with its own data dir and read model) and runner processes (`fooocus-es runner`), all real
processes talking over loopback. One module, one set of processes: the takeover test runs last."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import ServerProcess
from e2e_helpers import Receiver, image_from, submit, wait_for
from fleet_helpers import RunnerProcess
from nats_server import NatsServer

from fooocus_es.events.jetstream import JetStreamEventLog
from fooocus_es.events.types import TaskQueued, now_ms

FLEET_ONLY = "only_on_the_runners.safetensors"
LONG = {"overwrite_step": 200, "aspect_ratios_selection": "512*512", "image_number": 4}  # stopped before its end
SLOW = {"overwrite_step": 200, "aspect_ratios_selection": "128*128"}  # seconds of work on the demo model


class Fleet:
    def __init__(self, folder: Path, models: Path) -> None:
        self.a: ServerProcess | None = None
        self.b: ServerProcess | None = None
        self.runners: list[RunnerProcess] = []
        (folder / "nats").mkdir()
        self.nats = NatsServer(folder / "nats").start()
        try:
            self._start(folder, models)
        except BaseException:
            self.stop()  # nothing of a half-started fleet outlives the test run
            raise

    def _start(self, folder: Path, models: Path) -> None:
        fleet_args = ("--log", self.nats.url, "--no-runner", "--ack-wait", "2", "--allow-private-webhooks")
        self.a = ServerProcess(folder / "node-a", models, *fleet_args)
        self.a.start()
        (folder / "node-b" / "models").mkdir(parents=True)  # node B holds no model files at all
        self.b = ServerProcess(folder / "node-b", models, *fleet_args)
        self.b.start()
        # The runners' own models folder: the demo files plus a checkpoint the API nodes do not have.
        own = folder / "runner-models"
        (own / "checkpoints").mkdir(parents=True)
        for item in (models / "checkpoints").iterdir():
            (own / "checkpoints" / item.name).symlink_to(item)
        (own / "checkpoints" / FLEET_ONLY).symlink_to(models / "checkpoints" / "fooocus_es_demo.safetensors")
        for shared in ("loras", "inpaint", "vae", "upscale_models"):  # generated on first use: share the folders
            (models / shared).mkdir(exist_ok=True)
            (own / shared).symlink_to(models / shared, target_is_directory=True)
        self.models = own
        for n in (1, 2):
            self.runners.append(RunnerProcess(folder / f"runner-{n}", own, self.nats.url))
            self.runners[-1].start()

    def runner_of(self, task_id: str) -> RunnerProcess:
        """The runner process that logged the task's (last) TaskStarted."""
        started = [e for e in _events(self.a.url, task_id) if e["type"] == "TaskStarted"][-1]
        pid = int(started["runner"].split("-")[-2])
        return next(r for r in self.runners if r.process is not None and r.process.pid == pid)

    def logs(self) -> str:
        """The tail of every runner's log, for a failure message."""
        return "\n".join(r.log_path.read_text(errors="replace")[-3000:] for r in self.runners)

    def stop(self) -> None:
        for part in (*self.runners, self.a, self.b, self.nats):
            if part is not None:
                part.stop()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, demo_models: Path) -> Iterator[Fleet]:
    made = Fleet(tmp_path_factory.mktemp("fleet"), demo_models)
    yield made
    made.stop()


def stored_params(fleet: Fleet) -> dict:
    """The normalised params of a real task (what TaskQueued stores), taken from a finished one."""
    task = submit(fleet.a.url, {"prompt": "template"})
    return requests.get(f"{fleet.a.url}/tasks/{task['task_id']}/events", timeout=10).json()[0]["params"]


def _events(base: str, task_id: str) -> list[dict]:
    return requests.get(f"{base}/tasks/{task_id}/events", timeout=10).json()


def _wait_on_both(fleet: Fleet, task_id: str) -> tuple[dict, dict]:
    return wait_for(fleet.a.url, task_id, timeout=120), wait_for(fleet.b.url, task_id, timeout=120)


def test_a_task_from_one_node_runs_on_a_runner_and_shows_on_every_node(fleet: Fleet) -> None:
    assert requests.get(fleet.a.url + "/health", timeout=10).json()["ready"] is True
    task = submit(fleet.a.url, {"prompt": "fleet", "image_seed": 7})
    on_a, on_b = _wait_on_both(fleet, task["task_id"])
    assert on_a["task_status"] == on_b["task_status"] == "finished"
    assert on_a["result"] and [u.split("/outputs/")[1] for u in on_a["result"]] == [
        u.split("/outputs/")[1] for u in on_b["result"]
    ]
    events_a, events_b = _events(fleet.a.url, task["task_id"]), _events(fleet.b.url, task["task_id"])
    assert events_a == events_b and [e["type"] for e in events_a][0] == "TaskQueued"
    assert [e["seq"] for e in events_a] == sorted(e["seq"] for e in events_a)
    # The runner stored the image in the object store: a node that never had the file serves it.
    image = image_from(on_b["result"][0])
    assert image.size == (64, 64)
    history = requests.get(fleet.b.url + "/tasks", params={"query": "history"}, timeout=10).json()["history"]
    assert task["task_id"] in [r["task_id"] for r in history]


def test_an_api_node_loads_no_torch(fleet: Fleet) -> None:
    """An API node needs no GPU and no torch: neither is in the process after it served tasks."""
    for node in (fleet.a, fleet.b):
        assert node.process is not None
        maps = Path(f"/proc/{node.process.pid}/maps").read_text()
        assert "libtorch" not in maps and "libc10" not in maps
    health = requests.get(fleet.a.url + "/health", timeout=10).json()
    assert health["device"] == "none" and health["ready"] is True
    assert health["runners"]["idle"] + health["runners"]["busy"] == 2  # the fleet's, from their presence
    metrics = requests.get(fleet.b.url + "/metrics", timeout=10).text
    counted = sum(float(line.split()[-1]) for line in metrics.splitlines()
                  if line.startswith("fooocus_es_runners{") and 'state="stale"' not in line)  # fmt: skip
    assert counted == 2
    runner = fleet.runners[0].process
    assert runner is not None and "libtorch" in Path(f"/proc/{runner.pid}/maps").read_text()  # the check can fail


def test_an_api_node_with_no_models_admits_what_the_runners_have(fleet: Fleet) -> None:
    deadline = time.monotonic() + 15  # the runner's first presence beat
    while time.monotonic() < deadline:
        runners = requests.get(fleet.b.url + "/runners", timeout=10).json()["runners"]
        if runners and FLEET_ONLY in runners[0]["checkpoints"]:
            break
        time.sleep(0.5)
    only_there = {"base_model_name": FLEET_ONLY, "performance_selection": "Speed", "overwrite_step": 2}  # no LoRA
    task = submit(fleet.b.url, {"prompt": "theirs", **only_there})
    assert wait_for(fleet.a.url, task["task_id"], timeout=120)["task_status"] == "finished"
    unknown = requests.post(
        fleet.b.url + "/v1/engine/generate/", json={"prompt": "x", "base_model_name": "nowhere.safetensors"}, timeout=10
    )
    assert unknown.status_code == 400 and "base_model_name" in unknown.text


def test_stop_from_another_node_reaches_the_runner(fleet: Fleet) -> None:
    task = submit(fleet.a.url, {"prompt": "stop me", **LONG})
    wait_for(fleet.b.url, task["task_id"], until="running", timeout=120)
    deadline = time.monotonic() + 15  # presence says a change within 0.5 s, and beats every 5 s
    while time.monotonic() < deadline:
        runners = requests.get(fleet.a.url + "/runners", timeout=10).json()["runners"]
        if [r["task_id"] for r in runners if r["state"] == "busy"] == [task["task_id"]]:
            break  # a beat from before this task (up to 5 s old) may still show an earlier one
        time.sleep(0.5)
    busy = [r for r in runners if r["state"] == "busy"]
    assert len(runners) == 2 and len(busy) == 1 and busy[0]["task_id"] == task["task_id"]
    assert (
        busy[0]["runner_id"]
        == [e for e in _events(fleet.a.url, task["task_id"]) if e["type"] == "TaskStarted"][0]["runner"]
    )
    assert {r["device"] for r in runners} == {"cpu"} and {r["pool"] for r in runners} == {"default"}
    answer = requests.post(fleet.b.url + "/v1/engine/control", params={"action": "stop"}, timeout=10).json()
    assert answer["message"] == "task stopped"
    stopped = wait_for(fleet.a.url, task["task_id"], timeout=120)
    assert stopped["task_status"] == "stop"


def test_a_pending_task_is_cancelled_from_any_node(fleet: Fleet) -> None:
    busy = [submit(fleet.a.url, {"prompt": f"busy {i}", **LONG}) for i in range(2)]  # both runners busy
    waiting = submit(fleet.a.url, {"prompt": "waiting"})
    for task in busy:
        wait_for(fleet.b.url, task["task_id"], until="running", timeout=120)
    cancelled = requests.post(f"{fleet.b.url}/tasks/{waiting['task_id']}/cancel", timeout=10).json()
    assert cancelled["message"] == "task cancelled"
    assert wait_for(fleet.a.url, waiting["task_id"])["task_status"] == "cancelled"
    for task in busy:
        requests.post(f"{fleet.a.url}/tasks/{task['task_id']}/cancel", timeout=10)  # running: a stop
        assert wait_for(fleet.b.url, task["task_id"], timeout=120)["task_status"] == "stop"
    assert "TaskStarted" not in [e["type"] for e in _events(fleet.a.url, waiting["task_id"])]


def test_many_tasks_over_two_nodes_and_two_runners_end_once_with_one_history(fleet: Fleet) -> None:
    tasks = [submit((fleet.a, fleet.b)[i % 2].url, {"prompt": f"many {i}", "image_seed": i}) for i in range(12)]
    for task in tasks:
        assert wait_for(fleet.a.url, task["task_id"], timeout=180)["task_status"] == "finished"
    ran_on = set()
    for task in tasks:
        events_a, events_b = _events(fleet.a.url, task["task_id"]), _events(fleet.b.url, task["task_id"])
        assert events_a == events_b
        types = [e["type"] for e in events_a]
        assert types.count("TaskStarted") == 1 and types.count("TaskFinished") == 1 and types[-1] == "TaskFinished"
        ran_on.add(next(e["runner"] for e in events_a if e["type"] == "TaskStarted"))
    assert len(ran_on) == 2  # the idle runner pulls: both took work
    history = {node.url: requests.get(node.url + "/tasks", params={"query": "history", "page_size": 50}, timeout=10)
               .json()["history"] for node in (fleet.a, fleet.b)}  # fmt: skip
    ids = [[r["task_id"] for r in rows] for rows in history.values()]
    assert ids[0] == ids[1] and {t["task_id"] for t in tasks} <= set(ids[0])


def test_cancel_racing_start_has_one_winner_every_round(fleet: Fleet) -> None:
    for round_ in range(15):
        task = submit(fleet.a.url, {"prompt": f"race {round_}"})
        requests.post(f"{fleet.b.url}/tasks/{task['task_id']}/cancel", timeout=10)
        ended = wait_for(fleet.a.url, task["task_id"], timeout=120)
        types = [e["type"] for e in _events(fleet.b.url, task["task_id"])]
        if ended["task_status"] == "cancelled":
            assert types == ["TaskQueued", "TaskCancelled"]
        else:  # the runner started it first: the cancel became a stop
            assert (
                types[1] == "TaskStarted"
                and "TaskCancelled" not in types
                and ended["task_status"] in ("stop", "finished")
            )


def test_a_webhook_is_sent_once_by_the_fleet(fleet: Fleet) -> None:
    receiver = Receiver(failures=0)
    tasks = [submit(node.url, {"prompt": f"hook {i}", "webhook_url": receiver.url}) for i, node in
             enumerate((fleet.a, fleet.b, fleet.a))]  # fmt: skip
    for task in tasks:
        wait_for(fleet.b.url, task["task_id"], timeout=120)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(receiver.bodies) < len(tasks):
        time.sleep(0.2)
    time.sleep(2)  # a second node sending too would have done so by now
    assert sorted(body["task_id"] for body in receiver.bodies) == sorted(t["task_id"] for t in tasks)
    receiver.httpd.shutdown()


def test_a_task_whose_command_was_never_queued_is_swept_into_the_queue(fleet: Fleet) -> None:
    """As if an API node died between storing TaskQueued and queueing the command."""
    log = JetStreamEventLog(fleet.nats.url)
    orphan = uuid.uuid4().hex
    log.append(TaskQueued(task_id=orphan, at_ms=now_ms(), params=stored_params(fleet)), expected_version=0)
    log.close()
    ended = wait_for(fleet.b.url, orphan, timeout=120)  # swept within 2 x ack wait, then run
    assert ended["task_status"] == "finished"


def test_the_fleet_rides_out_a_nats_server_kill(fleet: Fleet) -> None:
    queued = [submit(fleet.a.url, {"prompt": f"before {i}"}) for i in range(2)]
    assert fleet.nats.process is not None
    fleet.nats.process.send_signal(signal.SIGKILL)
    fleet.nats.process.wait(10)
    fleet.nats.start()  # same port and store: every node and runner reconnects by itself
    after = submit(fleet.b.url, {"prompt": "after"})
    for task in [*queued, after]:
        ended = wait_for(fleet.a.url, task["task_id"], timeout=120)
        events = _events(fleet.b.url, task["task_id"])
        assert ended["task_status"] == "finished", (events, fleet.logs())
        types = [e["type"] for e in events]
        assert types.count("TaskStarted") == 1 and types.count("TaskFinished") == 1


def test_a_task_running_through_a_nats_outage_ends_once(fleet: Fleet) -> None:
    """nats-server away for longer than the ack wait while a runner samples: the runner drops its
    progress, waits for the store to save and log, and the task ends finished exactly once (run on,
    or taken over by the other runner after the restart, the version check fencing the first)."""
    # Sampling ends while the server is away, so the saves and the last appends wait for it.
    task = submit(fleet.a.url, {"prompt": "outage", "image_seed": 5, **SLOW, "overwrite_step": 60})
    wait_for(fleet.b.url, task["task_id"], until="running", timeout=120)
    assert fleet.nats.process is not None
    fleet.nats.process.send_signal(signal.SIGKILL)
    fleet.nats.process.wait(10)
    during = requests.post(fleet.b.url + "/v1/generation/text-to-image", json={"prompt": "x", "async_process": True},
                           timeout=60)  # fmt: skip
    time.sleep(4)
    fleet.nats.start()
    ended = wait_for(fleet.a.url, task["task_id"], timeout=180)
    events = _events(fleet.b.url, task["task_id"])
    assert ended["task_status"] == "finished" and len(ended["result"]) == 1, (events, fleet.logs())
    types = [e["type"] for e in events]
    assert types.count("TaskFinished") == 1 and types[-1] == "TaskFinished" and 1 <= types.count("TaskStarted") <= 2
    image_from(ended["result"][0])  # the file the record names is in the store
    # A submit while the server was away waited for it or was refused with a reason, never a bare 500.
    assert during.status_code in (200, 503), during.text
    if during.status_code == 200:
        assert wait_for(fleet.a.url, during.json()["task_id"], timeout=120)["task_status"] == "finished"
    else:
        assert "unreachable" in during.json()["detail"] and during.headers["Retry-After"]


def test_a_stopped_runner_hands_its_task_to_another(fleet: Fleet) -> None:
    """SIGTERM (a deploy, a scale-down): the runner gives its task back to the queue at once (a
    confirmed NAK, no ack wait) and exits; the other runner re-runs it from the start."""
    task = submit(fleet.a.url, {"prompt": "hand over", "image_seed": 4, **SLOW})
    wait_for(fleet.b.url, task["task_id"], until="running", timeout=120)
    first = fleet.runner_of(task["task_id"])
    assert first.process is not None
    first.process.terminate()
    first.process.wait(30)  # it stopped sampling, handed the task back and closed its connections
    ended = wait_for(fleet.a.url, task["task_id"], timeout=180)
    events = _events(fleet.b.url, task["task_id"])
    assert ended["task_status"] == "finished" and len(ended["result"]) == 1, (events, fleet.logs())
    types = [e["type"] for e in events]
    assert types.count("TaskStarted") == 2 and types.count("TaskFinished") == 1 and "TaskFailed" not in types
    started = [e for e in events if e["type"] == "TaskStarted"]
    assert started[0]["runner"] != started[1]["runner"] and started[1]["attempt"] == 2
    assert "task.handed_over" in first.log_path.read_text(errors="replace")
    gone = [r for r in requests.get(fleet.a.url + "/runners", timeout=10).json()["runners"]
            if r["runner_id"] == started[0]["runner"]]  # fmt: skip
    assert gone and gone[0]["state"] == "stopped"
    first.log_file.close()
    first.start()  # the fleet has two runners again for the tests after this one


def test_a_killed_runners_task_is_taken_over_and_run_once_more(fleet: Fleet, tmp_path: Path, demo_models: Path) -> None:
    task = submit(fleet.a.url, {"prompt": "survive", "image_seed": 3, **SLOW})
    wait_for(fleet.b.url, task["task_id"], until="running", timeout=120)
    first = fleet.runner_of(task["task_id"])
    first.kill()  # the other runner takes the command over after the ack wait
    ended = wait_for(fleet.a.url, task["task_id"], timeout=180)
    assert ended["task_status"] == "finished" and len(ended["result"]) == 1
    events = _events(fleet.b.url, task["task_id"])
    started = [e for e in events if e["type"] == "TaskStarted"]
    assert [e.get("attempt", 1) for e in started] == [1, 2]  # the default is left out of the JSON
    assert started[0]["runner"] != started[1]["runner"]
    assert [e["type"] for e in events].count("TaskFinished") == 1 and events[-1]["type"] == "TaskFinished"
