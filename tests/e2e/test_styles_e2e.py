"""Styles end to end: a user's style file, the applied template in the image metadata, and notes."""

from __future__ import annotations

import json

import requests
from e2e_helpers import submit, wait_for

from fooocus_es.media.outputs import read_parameters


def test_user_style_applies_and_v2_expands(make_server, tmp_path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "styles").mkdir(parents=True)
    style = [{"name": "my-test style", "prompt": "etching of {prompt}, fine lines", "negative_prompt": "colour"}]
    (data_dir / "styles" / "mine.json").write_text(json.dumps(style))
    server = make_server(data_dir=data_dir).start()
    assert "My Test Style" in requests.get(server.url + "/v1/engines/styles", timeout=10).json()

    body = {"prompt": "a harbour", "negative_prompt": "blur", "image_number": 2}
    task = submit(server.url, {**body, "style_selections": ["Fooocus V2", "My Test Style"]})
    done = wait_for(server.url, task["task_id"])
    assert done["task_status"] == "finished" and len(done["result"]) == 2
    assert not any("Fooocus V2" in note for note in done["notes"])  # the demo model has its own expansion
    parameters, _ = read_parameters(requests.get(done["result"][0], timeout=10).content)
    meta = json.loads(parameters)
    assert "etching of a harbour, fine lines" in meta["full_prompt"]
    # Fooocus's rule: the prompt, a comma, then the generated words; those may start with a comma
    # of their own ("a harbour,, ..."), as the random seed decides.
    assert meta["prompt_expansion"].startswith("a harbour,") and meta["full_prompt"][-1] == meta["prompt_expansion"]
    assert len(meta["prompt_expansion"]) > len("a harbour,")
    assert "colour" in " ".join(meta["full_negative_prompt"]) and "blur" in " ".join(meta["full_negative_prompt"])
    assert meta["styles"] == ["Fooocus V2", "My Test Style"]  # as Fooocus logs them: V2 first

    bad = {"style_selections": ["Nope"], "async_process": True}
    unknown = requests.post(server.url + "/v1/engine/generate/", json=bad, timeout=10)
    assert unknown.status_code == 400 and "style_selections[0]" in unknown.text


def test_sharpness_changes_pixels_and_lightning_forces_it_off(server) -> None:
    from e2e_helpers import image_from

    base = {"prompt": "knobs", "image_seed": 5, "performance_selection": "Speed", "overwrite_step": 4}

    def pixels(**extra: object) -> bytes:
        done = wait_for(server.url, submit(server.url, {**base, **extra})["task_id"])
        return image_from(done["result"][0]).tobytes()

    plain, sharp, sharp_again = pixels(sharpness=0), pixels(sharpness=20), pixels(sharpness=20)
    assert plain != sharp and sharp == sharp_again
    lightning = {**base, "performance_selection": "Lightning"}
    assert pixels(**lightning, sharpness=0) == pixels(**lightning, sharpness=20)  # forced to 0
