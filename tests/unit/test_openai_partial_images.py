"""Which progress events become OpenAI partial images: the thresholds, and previews the runner paced away."""

from __future__ import annotations

from fooocus_es.api.openai import PartialImages, partial_steps
from fooocus_es.events.types import TaskProgress


def step(n: int, preview: str | None = None, *, image: int = 0, stage: str = "sampling") -> TaskProgress:
    return TaskProgress(
        task_id="t", at_ms=0, percent=13, message="", stage=stage, step=n, steps=4, image_index=image, preview=preview
    )


def test_thresholds_are_spread_over_the_steps_and_never_the_last() -> None:
    assert partial_steps(4, 1) == [2]
    assert partial_steps(30, 3) == [8, 15, 22]
    assert partial_steps(2, 3) == [1, 1, 1]  # more partials than steps: they share the first
    assert all(max(partial_steps(steps, n)) < steps for steps in range(2, 60) for n in (1, 2, 3))


def test_a_threshold_step_without_a_preview_sends_the_newest_earlier_one() -> None:
    partials = PartialImages(partial_steps(4, 1))
    assert partials.offer(step(1, "data:image/jpeg;base64,ONE")) is None  # before the threshold
    assert partials.offer(step(2)) == "data:image/jpeg;base64,ONE"  # paced away at step 2: step 1's
    assert partials.offer(step(3, "data:image/jpeg;base64,THREE")) is None  # one partial asked for
    assert partials.offer(step(4, "data:image/jpeg;base64,FOUR")) is None


def test_each_preview_is_sent_once_and_images_count_apart() -> None:
    partials = PartialImages(partial_steps(4, 3))  # thresholds 1, 2, 3
    assert partials.offer(step(1, "A1")) == "A1"
    assert partials.offer(step(2)) is None  # no newer preview: A1 is not sent twice
    assert partials.offer(step(1, "B1", image=1)) == "B1"  # the second image has its own count
    assert partials.offer(step(3, "A3")) == "A3"
    assert partials.offer(step(2, "B2", image=1)) == "B2"


def test_no_partials_asked_and_other_stages_send_nothing() -> None:
    assert PartialImages([]).offer(step(2, "X")) is None
    assert PartialImages([1]).offer(step(1, "X", stage="saving")) is None
