"""The fake ComfyUI (fakes.comfyui) answers like the captures of a real ComfyUI (real HTTP + WS).

Both generations: 0.3.64 (the captures) and 0.38 (prompt_id check, jobs API), plus the
fault controls the worker's tests rely on.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from fakes.comfyui import FakeComfyUI, big_output_sha256, load_fixture
from tests.conftest import wait_until

# One pooled client for the module: creating an httpx client costs ~50 ms.
HTTP = httpx.Client(timeout=10)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def comfy(tmp_path) -> Iterator[FakeComfyUI]:
    with FakeComfyUI(tmp_path) as server:
        yield server


@pytest.fixture
def newer(tmp_path) -> Iterator[FakeComfyUI]:
    with FakeComfyUI(tmp_path, version="0.38.0") as server:
        yield server


# --- helpers -------------------------------------------------------------------------


def multi_graph(color: int = 65280) -> Any:
    """The graph of ws_success_multi.jsonl / get_history_prompt_id_multi.json."""
    return load_fixture("get_history_prompt_id_multi.json")["7ab2b89b-c227-4503-9e1e-5da82c69b3e7"][
        "prompt"
    ][2] | {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 2, "color": color},
        }
    }


def escape_graph() -> Any:
    return load_fixture("get_history_prompt_id_execution_error.json")[
        "344f8966-3acd-4c9a-a86b-7719e18d8b88"
    ]["prompt"][2]


def chain_graph(middle: dict[str, Any], prefix: str = "chain/out") -> dict[str, Any]:
    """EmptyImage -> middle -> SaveImage, like the interrupt sample."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 11},
        },
        "2": middle,
        "3": {
            "class_type": "SaveImage",
            "inputs": {"images": ["2", 0], "filename_prefix": prefix},
        },
    }


def sd_graph(ckpt: str = "sd_xl_base_1.0.safetensors", steps: int = 4) -> dict[str, Any]:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 512, "height": 512, "batch_size": 1},
        },
        "5": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0],
                "seed": 1,
                "steps": steps,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "positive": ["2", 0],
                "negative": ["3", 0],
                "latent_image": ["4", 0],
                "denoise": 1.0,
            },
        },
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "sd"}},
    }


def post_prompt(comfy: FakeComfyUI, graph: Any, **body: Any) -> httpx.Response:
    return HTTP.post(f"{comfy.base_url}/prompt", json={"prompt": graph, **body})


def history(comfy: FakeComfyUI, prompt_id: str) -> Any:
    return HTTP.get(f"{comfy.base_url}/history/{prompt_id}").json()


def run(comfy: FakeComfyUI, graph: dict[str, Any], **body: Any) -> tuple[str, dict[str, Any]]:
    response = post_prompt(comfy, graph, **body)
    assert response.status_code == 200, response.text
    prompt_id = response.json()["prompt_id"]
    comfy.wait_idle()
    return prompt_id, history(comfy, prompt_id)[prompt_id]


@contextmanager
def open_ws(comfy: FakeComfyUI, client_id: str) -> Iterator[ClientConnection]:
    with connect(f"{comfy.ws_url}?clientId={client_id}", open_timeout=5, proxy=None) as ws:
        first = json.loads(ws.recv(timeout=5))
        assert first["type"] == "status" and first["data"]["sid"] == client_id
        yield ws


def collect(
    ws: ClientConnection, until: Callable[[dict[str, Any]], bool], timeout: float = 5.0
) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        raw = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(raw, bytes):
            continue
        message = json.loads(raw)
        messages.append(message)
        if until(message):
            return messages


def wait_running(comfy: FakeComfyUI) -> None:
    wait_until(lambda: HTTP.get(f"{comfy.base_url}/queue").json()["queue_running"])


def assert_closed(ws: ClientConnection) -> None:
    with pytest.raises(ConnectionClosed):
        while True:
            ws.recv(timeout=2)


def is_final(message: dict[str, Any]) -> bool:
    return message["type"] == "executing" and message["data"]["node"] is None


def keys_tree(value: Any) -> Any:
    """The nested key structure of a JSON value (lists: structure of their first item)."""
    if isinstance(value, dict):
        return {k: keys_tree(v) for k, v in value.items()}
    if isinstance(value, list) and value:
        return [keys_tree(value[0])]
    return type(value).__name__ if value is not None else None


def fixture_body(name: str) -> Any:
    return load_fixture(name)["body"]


def only_entry(payload: dict[str, Any]) -> dict[str, Any]:
    assert len(payload) == 1
    return next(iter(payload.values()))


def sleeper_graph() -> dict[str, Any]:
    """EmptyImage -> FakeSleep(20 s, interruptible) -> SaveImage."""
    return chain_graph({"class_type": "FakeSleep", "inputs": {"seconds": 20, "value": ["1", 0]}})


def job(comfy: FakeComfyUI, prompt_id: str) -> httpx.Response:
    return HTTP.get(f"{comfy.base_url}/api/jobs/{prompt_id}")


def cancel(comfy: FakeComfyUI, prompt_id: str) -> Any:
    response = HTTP.post(f"{comfy.base_url}/api/jobs/{prompt_id}/cancel")
    assert response.status_code == 200
    return response.json()


def upscale_graph(model: str) -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": model}},
        "3": {
            "class_type": "ImageUpscaleWithModel",
            "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]},
        },
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "up"}},
    }


# --- static endpoints ------------------------------------------------------------------


def test_system_stats_is_the_capture(comfy):
    """GET /system_stats answers the captured body."""
    assert HTTP.get(f"{comfy.base_url}/system_stats").json() == load_fixture(
        "get_system_stats.json"
    )


def test_object_info_shapes_and_dynamic_lists(comfy):
    """/object_info has the captured entries' shapes, the configured checkpoints and extra nodes."""
    captured = load_fixture("get_object_info_subset.json")
    info = HTTP.get(f"{comfy.base_url}/object_info").json()
    for name, entry in captured.items():
        assert info[name].keys() == entry.keys()
        assert info[name]["input"].keys() == entry["input"].keys()
    assert info["KSampler"] == captured["KSampler"]
    ckpt = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"]
    assert ckpt[0] == ["sd_xl_base_1.0.safetensors", "flux1-schnell-fp8.safetensors"]
    for extra in ("ImageBlur", "SaveAnimatedWEBP", "FakeBigOutput", "FakeText", "FakeSleep"):
        assert extra in info
    comfy.checkpoints = ["only.safetensors"]
    one = HTTP.get(f"{comfy.base_url}/object_info/CheckpointLoaderSimple").json()
    assert list(one) == ["CheckpointLoaderSimple"]
    assert one["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == [
        "only.safetensors"
    ]
    assert HTTP.get(f"{comfy.base_url}/object_info/Nope").json() == {}


# --- POST /prompt ----------------------------------------------------------------------


def test_post_prompt_200_shape_and_numbers(comfy):
    """An accepted prompt answers {prompt_id, number, node_errors} with increasing numbers."""
    first = post_prompt(comfy, multi_graph())
    second = post_prompt(comfy, multi_graph(color=1))
    assert first.status_code == second.status_code == 200
    assert first.json().keys() == fixture_body("post_prompt_200.json").keys()
    assert first.json()["node_errors"] == {}
    assert second.json()["number"] == first.json()["number"] + 1
    assert comfy.submitted == [first.json()["prompt_id"], second.json()["prompt_id"]]


def test_client_prompt_id_is_kept_and_duplicates_are_queued_again(comfy):
    """A client-chosen prompt_id is kept; ComfyUI queues a duplicate id again."""
    prompt_id = load_fixture("post_prompt_200_client_prompt_id.json")["request_prompt_id"]
    first = post_prompt(comfy, multi_graph(), prompt_id=prompt_id)
    again = post_prompt(comfy, multi_graph(color=3), prompt_id=prompt_id)
    assert first.status_code == again.status_code == 200
    assert first.json()["prompt_id"] == again.json()["prompt_id"] == prompt_id
    comfy.wait_idle()
    assert comfy.executed == [prompt_id, prompt_id]
    assert list(history(comfy, prompt_id)) == [prompt_id]


def test_non_dict_prompt_and_empty_body_answer_500_text(comfy):
    """A non-dict prompt or an empty body crash the handler: 500 with aiohttp's text."""
    expected = load_fixture("post_prompt_no_body.json")["body"]
    assert load_fixture("post_prompt_400_not_a_graph.json")["body"]["non_json_body"] == expected
    for response in (
        post_prompt(comfy, [1, 2]),
        post_prompt(comfy, "not a graph"),
        HTTP.post(f"{comfy.base_url}/prompt", content=b""),
    ):
        assert response.status_code == 500
        assert response.text == expected
    assert comfy.submitted == []


def test_missing_prompt_key_is_no_prompt(comfy):
    """A body without "prompt" answers 400 no_prompt."""
    response = HTTP.post(f"{comfy.base_url}/prompt", json={"client_id": "x"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "no_prompt"
    assert response.json()["node_errors"] == {}


def test_unknown_node_is_the_captured_400(comfy):
    """An unknown class_type answers exactly the captured invalid_prompt body."""
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {}},
        "2": {"class_type": "NoSuchNode", "inputs": {}},
    }
    response = post_prompt(comfy, graph)
    assert response.status_code == 400
    assert response.json() == fixture_body("post_prompt_400_unknown_node.json")


def test_type_mismatch_is_the_captured_400(comfy):
    """A MODEL linked into SaveImage.images answers exactly the captured body."""
    graph = {
        "1": {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    response = post_prompt(comfy, graph)
    assert response.status_code == 400
    assert response.json() == fixture_body("post_prompt_400_type_mismatch.json")


def test_checkpoint_not_in_list(comfy):
    """An unknown checkpoint fails validation with value_not_in_list like ComfyUI."""
    response = post_prompt(comfy, sd_graph(ckpt="x.safetensors"))
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    error = body["node_errors"]["1"]["errors"][0]
    assert error["type"] == "value_not_in_list"
    assert error["message"] == "Value not in list"
    assert error["details"] == (
        "ckpt_name: 'x.safetensors' not in "
        "['sd_xl_base_1.0.safetensors', 'flux1-schnell-fp8.safetensors']"
    )
    assert body["node_errors"]["1"]["dependent_outputs"] == ["7"]
    assert body["node_errors"]["1"]["class_type"] == "CheckpointLoaderSimple"


def test_missing_input_missing_link_and_no_outputs(comfy):
    """Required input missing, a link to a missing node and no output node are 400s."""
    missing = post_prompt(comfy, {"1": {"class_type": "SaveImage", "inputs": {}}})
    assert missing.status_code == 400
    errors = missing.json()["node_errors"]["1"]["errors"]
    assert [e["type"] for e in errors] == ["required_input_missing", "required_input_missing"]
    assert [e["details"] for e in errors] == ["images", "filename_prefix"]

    dangling = post_prompt(
        comfy,
        {"1": {"class_type": "SaveImage", "inputs": {"images": ["99", 0], "filename_prefix": "x"}}},
    )
    assert dangling.status_code == 400
    error = dangling.json()["node_errors"]["1"]["errors"][0]
    assert error["type"] == "exception_during_validation"
    assert error["details"] == "'99'"

    no_outputs = post_prompt(comfy, {"1": multi_graph()["1"]})
    assert no_outputs.status_code == 400
    assert no_outputs.json()["error"]["type"] == "prompt_no_outputs"
    assert comfy.submitted == []


# --- execution, WebSocket, history ------------------------------------------------------


def test_success_ws_sequence_and_history_match_the_capture(comfy):
    """A run sends the captured message sequence, then status and executing(null)."""
    captured = load_fixture("ws_success_multi.jsonl")
    with open_ws(comfy, "sample-ef0ba417") as ws:
        prompt_id = post_prompt(comfy, multi_graph(), client_id="sample-ef0ba417").json()[
            "prompt_id"
        ]
        messages = [{"type": "status"}, *collect(ws, is_final)]
    assert [m["type"] for m in messages] == [m["type"] for m in captured] + [
        "status",
        "executing",
    ]
    for ours, theirs in zip(messages[1:], captured[1:], strict=False):
        assert ours["data"].keys() == theirs["data"].keys(), ours["type"]
    assert messages[-1]["data"] == {"node": None, "prompt_id": prompt_id}
    assert messages[-2]["data"] == {"status": {"exec_info": {"queue_remaining": 0}}}

    entry = history(comfy, prompt_id)[prompt_id]
    expected = only_entry(load_fixture("get_history_prompt_id_multi.json"))
    assert keys_tree(entry) == keys_tree(expected)
    assert entry["outputs"]["2"] == expected["outputs"]["2"]
    previews = entry["outputs"]["3"]["images"]
    assert [p["filename"][-11:] for p in previews] == ["_00001_.png", "_00002_.png"]
    assert all(p["filename"].startswith("ComfyUI_temp_") and p["type"] == "temp" for p in previews)
    assert entry["meta"] == expected["meta"]
    assert entry["prompt"][3] == {"client_id": "sample-ef0ba417"}
    assert comfy.executed == [prompt_id]
    assert os.path.isfile(comfy.root / "output" / "sample" / "still_00002_.png")


def test_messages_go_only_to_the_prompt_client(comfy):
    """Execution messages reach only the socket whose clientId submitted; status reaches all."""
    with open_ws(comfy, "owner") as owner, open_ws(comfy, "other") as other:
        post_prompt(comfy, multi_graph(), client_id="owner")
        collect(owner, is_final)
        comfy.wait_idle()
        seen = collect(
            other,
            lambda m: (
                m["type"] == "status" and m["data"]["status"]["exec_info"]["queue_remaining"] == 0
            ),
        )
    types = {m["type"] for m in seen}
    assert types == {"status"}


def test_escape_prefix_fails_at_run_time_like_the_capture(comfy):
    """A filename_prefix leaving output/ fails at run time with the captured execution_error."""
    captured = load_fixture("ws_execution_error.jsonl")
    with open_ws(comfy, "c1") as ws:
        prompt_id = post_prompt(comfy, escape_graph(), client_id="c1").json()["prompt_id"]
        messages = collect(ws, is_final)
    assert [m["type"] for m in messages] == [m["type"] for m in captured[1:]] + [
        "status",
        "executing",
    ]
    error = messages[-3]["data"]
    assert error.keys() == captured[-1]["data"].keys()
    assert error["exception_type"] == "Exception"
    assert error["node_type"] == "SaveImage" and error["executed"] == ["1"]
    assert error["exception_message"].startswith(
        "**** ERROR: Saving image outside the output folder is not allowed.\n full_output_folder: "
    )
    entry = history(comfy, prompt_id)[prompt_id]
    expected = only_entry(load_fixture("get_history_prompt_id_execution_error.json"))
    assert keys_tree(entry) == keys_tree(expected)
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert [m[0] for m in entry["status"]["messages"]] == [
        m[0] for m in expected["status"]["messages"]
    ]


def test_injected_oom(comfy):
    """fail_node turns a node into an execution_error with the given type and message."""
    comfy.fail_node("SaveImage", "torch.OutOfMemoryError", "Allocation on device")
    _, entry = run(comfy, multi_graph())
    event, data = entry["status"]["messages"][-1]
    assert event == "execution_error"
    assert data["exception_type"] == "torch.OutOfMemoryError"
    assert data["exception_message"].startswith("Allocation on device\n")
    assert data["node_type"] == "SaveImage"
    assert not (comfy.root / "output" / "sample").exists()
    comfy.clear_failures()
    _, entry = run(comfy, multi_graph())
    assert entry["status"]["status_str"] == "success"


@pytest.mark.slow  # a second or more of real waiting
def test_interrupt_takes_effect_at_the_next_node_like_the_capture(comfy):
    """A targeted interrupt during a node stops the prompt at the next node boundary."""
    captured = load_fixture("ws_interrupted.jsonl")
    start = next(i for i, m in enumerate(captured) if m["type"] == "execution_start")
    comfy.execution_time_s = 1.5  # 0.5 s per node: the interrupt lands while node 2 works
    graph = chain_graph(
        {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 31, "sigma": 5.0}}
    )
    with open_ws(comfy, "c1") as ws:
        prompt_id = post_prompt(comfy, graph, client_id="c1").json()["prompt_id"]
        before = collect(ws, lambda m: m["type"] == "executing" and m["data"]["node"] == "2")
        HTTP.post(f"{comfy.base_url}/interrupt", json={"prompt_id": "someone-else"})
        HTTP.post(f"{comfy.base_url}/interrupt", json={"prompt_id": prompt_id})
        messages = before + collect(ws, is_final)
    ours = [m["type"] for m in messages]
    ours = ours[ours.index("execution_start") :]
    assert ours == [m["type"] for m in captured[start:]] + ["status", "executing"]
    interrupted = messages[-3]["data"]
    assert interrupted.keys() == captured[-1]["data"].keys()
    assert (interrupted["node_id"], interrupted["executed"]) == ("3", ["1", "2"])
    entry = history(comfy, prompt_id)[prompt_id]
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    assert entry["outputs"] == {}
    assert comfy.interrupted == [prompt_id]


def test_interrupt_cuts_fake_sleep_short(comfy):
    """An interrupt stops a FakeSleep promptly; the prompt is absent from /history until done."""
    prompt_id = post_prompt(comfy, sleeper_graph()).json()["prompt_id"]
    wait_running(comfy)
    assert history(comfy, prompt_id) == load_fixture("get_history_prompt_id_interrupted.json")
    response = HTTP.post(f"{comfy.base_url}/interrupt", json={})
    assert response.status_code == 200 and response.content == b""
    comfy.wait_idle(timeout=10)  # the 20 s sleep was cut short
    data = history(comfy, prompt_id)[prompt_id]["status"]["messages"][-1][1]
    assert (data["node_id"], data["node_type"]) == ("2", "FakeSleep")


def test_identical_graph_is_fully_cached_with_the_same_files(comfy):
    """Re-submitting a graph is cached: all nodes listed, same files, nothing new on disk."""
    first_id, first = run(comfy, multi_graph())
    files_before = sorted(p for p in comfy.root.rglob("*") if p.is_file())
    with open_ws(comfy, "c2") as ws:
        second_id = post_prompt(comfy, multi_graph(), client_id="c2").json()["prompt_id"]
        messages = collect(ws, is_final)
    second = history(comfy, second_id)[second_id]
    cached = next(m for m in messages if m["type"] == "execution_cached")
    assert cached["data"]["nodes"] == ["1", "2", "3"]
    assert "executing" not in {m["type"] for m in messages[:-1]}
    assert sorted(m["data"]["node"] for m in messages if m["type"] == "executed") == ["2", "3"]
    assert second["outputs"] == first["outputs"]
    assert sorted(p for p in comfy.root.rglob("*") if p.is_file()) == files_before
    assert comfy.executed == [first_id] and comfy.cached_runs == [second_id]

    run(comfy, multi_graph(color=5))  # another graph evicts the cache (CLASSIC)
    _, third = run(comfy, multi_graph())
    assert third["outputs"]["2"]["images"][0]["filename"] == "still_00005_.png"


@pytest.mark.slow  # a second or more of real waiting
def test_history_delay_reproduces_the_race(comfy):
    """With history_delay_s, execution_success arrives before /history has the entry."""
    comfy.history_delay_s = 1.0
    with open_ws(comfy, "c1") as ws:
        prompt_id = post_prompt(comfy, multi_graph(), client_id="c1").json()["prompt_id"]
        collect(ws, lambda m: m["type"] == "execution_success")
        seen_at = time.monotonic()
        assert history(comfy, prompt_id) == {}
        collect(ws, is_final)
    assert prompt_id in history(comfy, prompt_id)
    assert comfy.finish_times[prompt_id] <= seen_at


def test_ksampler_progress_and_execution_time(comfy):
    """KSampler sends progress value 1..steps; execution_time_s spreads over the nodes."""
    comfy.execution_time_s = 0.2
    with open_ws(comfy, "c1") as ws:
        prompt_id = post_prompt(comfy, sd_graph(steps=4), client_id="c1").json()["prompt_id"]
        messages = collect(ws, is_final)
    progress = [m["data"] for m in messages if m["type"] == "progress"]
    assert progress == [
        {"value": i, "max": 4, "prompt_id": prompt_id, "node": "5"} for i in range(1, 5)
    ]
    times = comfy.node_times[prompt_id]
    assert set(times) == {str(i) for i in range(1, 8)}
    total = max(end for _, end in times.values()) - min(start for start, _ in times.values())
    assert total >= 0.18


def test_other_output_kinds(comfy):
    """SaveAnimatedWEBP, SaveLatent and FakeText produce their captured ui keys."""
    graph = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 32, "height": 32, "batch_size": 3, "color": 0},
        },
        "2": {
            "class_type": "SaveAnimatedWEBP",
            "inputs": {
                "images": ["1", 0],
                "filename_prefix": "anim/a",
                "fps": 6.0,
                "lossless": True,
                "quality": 80,
                "method": "default",
            },
        },
        "3": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1},
        },
        "4": {
            "class_type": "SaveLatent",
            "inputs": {"samples": ["3", 0], "filename_prefix": "latents/ComfyUI"},
        },
        "5": {"class_type": "FakeText", "inputs": {"value": "hello"}},
    }
    _, entry = run(comfy, graph)
    outputs = entry["outputs"]
    assert outputs["2"] == {
        "images": [{"filename": "a_00001_.webp", "subfolder": "anim", "type": "output"}],
        "animated": [True],
    }
    assert outputs["4"] == {
        "latents": [{"filename": "ComfyUI_00001_.latent", "subfolder": "latents", "type": "output"}]
    }
    assert outputs["5"] == {"text": ["hello"]}


# --- queue -----------------------------------------------------------------------------


def test_queue_running_pending_delete_and_clear(comfy):
    """/queue lists [number, id, prompt, extra_data, outputs]; delete and clear drop pending."""
    sleeper = sleeper_graph()
    running_id = post_prompt(comfy, sleeper).json()["prompt_id"]
    wait_running(comfy)
    comfy.pause()
    pending = [post_prompt(comfy, multi_graph(color=c)).json()["prompt_id"] for c in (1, 2, 3)]
    queue = HTTP.get(f"{comfy.base_url}/queue").json()
    captured = load_fixture("get_queue_running_pending.json")
    assert keys_tree(queue) == keys_tree(captured) | {
        "queue_running": keys_tree(queue["queue_running"])
    }
    item_types = [type(v) for v in captured["queue_pending"][0]]
    assert [type(v) for v in queue["queue_pending"][0]] == item_types
    running = queue["queue_running"][0]
    assert len(running) == 5 and running[1] == running_id and running[2] == sleeper
    assert running[4] == ["3"]
    assert [item[1] for item in queue["queue_pending"]] == pending

    response = HTTP.post(f"{comfy.base_url}/queue", json={"delete": [pending[0]]})
    assert response.status_code == 200 and response.content == b""
    after = HTTP.get(f"{comfy.base_url}/queue").json()
    assert [item[1] for item in after["queue_pending"]] == pending[1:]
    assert after["queue_running"][0][1] == running_id
    HTTP.post(f"{comfy.base_url}/queue", json={"clear": True})
    assert HTTP.get(f"{comfy.base_url}/queue").json()["queue_pending"] == []
    assert comfy.deleted == pending
    HTTP.post(f"{comfy.base_url}/interrupt", json={"prompt_id": running_id})
    comfy.resume()
    comfy.wait_idle()
    assert list(HTTP.get(f"{comfy.base_url}/history").json()) == [running_id]


def test_history_max_items(comfy):
    """GET /history?max_items=N returns the N most recent entries."""
    ids = [run(comfy, multi_graph(color=c))[0] for c in (1, 2, 3)]
    assert list(HTTP.get(f"{comfy.base_url}/history", params={"max_items": 2}).json()) == ids[1:]
    assert history(comfy, "nope") == load_fixture("get_history_prompt_id_unknown.json")["body"]


# --- files -----------------------------------------------------------------------------


def test_view_headers_missing_and_traversal(comfy):
    """/view serves files with the captured headers, 404 when missing, 400 on traversal."""
    run(comfy, multi_graph())
    url = f"{comfy.base_url}/view"
    response = HTTP.get(
        url, params={"filename": "still_00001_.png", "subfolder": "sample", "type": "output"}
    )
    captured = load_fixture("get_view_headers.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == captured["headers"]["Content-Type"]
    assert response.headers["content-disposition"] == captured["headers"]["Content-Disposition"]
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.content.startswith(b"\x89PNG\r\n\x1a\n")

    missing = HTTP.get(url, params={"filename": "nope.png", "type": "output"})
    assert (missing.status_code, missing.text) == (
        404,
        load_fixture("get_view_missing.json")["body"],
    )
    for bad in ("../secret.png", "/etc/passwd"):
        traversal = HTTP.get(url, params={"filename": bad, "type": "output"})
        assert traversal.status_code == load_fixture("get_view_traversal.json")["status"]
    assert HTTP.get(url, params={"filename": "x.png", "subfolder": "../.."}).status_code == 403
    assert HTTP.get(url, params={"filename": "x.png", "type": "models"}).status_code == 400


def test_upload_then_load_image(comfy):
    """Uploads name files like ComfyUI, and LoadImage accepts exactly the uploaded files."""
    url = f"{comfy.base_url}/upload/image"
    png = b"\x89PNG\r\n\x1a\nfirst"

    def upload(data: bytes, **fields: str) -> Any:
        response = HTTP.post(url, files={"image": ("cat.png", data, "image/png")}, data=fields)
        assert response.status_code == 200, response.text
        return response.json()

    assert upload(png) == {"name": "cat.png", "subfolder": "", "type": "input"}
    assert upload(png)["name"] == "cat.png"  # same bytes: duplicate, not renamed
    assert upload(b"other")["name"] == "cat (1).png"
    assert upload(b"third", overwrite="true")["name"] == "cat.png"
    assert upload(png, subfolder="sub")["subfolder"] == "sub"
    assert (comfy.root / "input" / "cat.png").read_bytes() == b"third"
    listed = HTTP.get(f"{comfy.base_url}/object_info/LoadImage").json()
    assert listed["LoadImage"]["input"]["required"]["image"][0] == ["cat (1).png", "cat.png"]

    def load_graph(image: str) -> dict[str, Any]:
        return {
            "1": {"class_type": "LoadImage", "inputs": {"image": image}},
            "2": {
                "class_type": "SaveImage",
                "inputs": {"images": ["1", 0], "filename_prefix": "l"},
            },
        }

    for name in ("cat (1).png", "sub/cat.png"):
        _, entry = run(comfy, load_graph(name))
        assert entry["status"]["status_str"] == "success"
    rejected = post_prompt(comfy, load_graph("missing.png"))
    assert rejected.status_code == 400
    error = rejected.json()["node_errors"]["1"]["errors"][0]
    assert error["type"] == "custom_validation_failed"
    assert error["details"] == "image - Invalid image file: missing.png"
    assert len(comfy.uploads) == 5


def test_big_output_streams_without_disk(comfy):
    """FakeBigOutput's file is generated in /view: right length, hash, and no file on disk."""
    size = 3 * 1024 * 1024 + 5
    graph = {
        "1": {
            "class_type": "FakeBigOutput",
            "inputs": {"size_bytes": size, "filename_prefix": "big/b"},
        }
    }
    _, entry = run(comfy, graph)
    item = entry["outputs"]["1"]["images"][0]
    assert item == {"filename": "b_00001_.bin", "subfolder": "big", "type": "output"}
    digest = hashlib.sha256()
    params = {"filename": item["filename"], "subfolder": "big", "type": "output"}
    with HTTP.stream("GET", f"{comfy.base_url}/view", params=params) as response:
        assert response.status_code == 200
        assert int(response.headers["content-length"]) == size
        assert response.headers["content-type"] == "application/octet-stream"
        received = 0
        for chunk in response.iter_bytes():
            received += len(chunk)
            digest.update(chunk)
    assert received == size
    assert digest.hexdigest() == big_output_sha256(item["filename"], size)
    assert not (comfy.root / "output" / "big" / "b_00001_.bin").exists()


# --- controls --------------------------------------------------------------------------


def test_fail_requests_burst_and_delay(comfy):
    """fail_requests answers the next N matching requests with the status; delays slow them."""
    comfy.fail_requests("GET", "/history/*", 2, status=503)
    statuses = [HTTP.get(f"{comfy.base_url}/history/x").status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    comfy.fail_requests("POST", "/prompt", 1)
    failed = post_prompt(comfy, multi_graph())
    assert (failed.status_code, failed.text) == (
        500,
        load_fixture("post_prompt_no_body.json")["body"],
    )
    assert post_prompt(comfy, multi_graph()).status_code == 200
    comfy.delay_requests("GET", "/queue", 0.2)
    started = time.monotonic()
    HTTP.get(f"{comfy.base_url}/queue")
    assert time.monotonic() - started >= 0.2
    assert ("GET", "/queue") in comfy.requests


def test_websocket_disabled_and_dropped(comfy):
    """websocket_enabled=False refuses the upgrade; drop_websockets closes open sockets."""
    with open_ws(comfy, "c1") as ws:
        comfy.drop_websockets()
        assert_closed(ws)
    comfy.websocket_enabled = False
    with pytest.raises(InvalidStatus) as refused, open_ws(comfy, "c2"):
        pass
    assert refused.value.response.status_code == 403


def test_restart_forgets_everything(comfy):
    """restart() abandons the running prompt and forgets queue and history; server keeps going."""
    done_id, _ = run(comfy, multi_graph())
    running_id = post_prompt(comfy, sleeper_graph()).json()["prompt_id"]
    wait_running(comfy)
    comfy.pause()
    pending_id = post_prompt(comfy, multi_graph(color=9)).json()["prompt_id"]
    with open_ws(comfy, "c1") as ws:
        comfy.restart()
        assert_closed(ws)
    comfy.resume()
    queue = HTTP.get(f"{comfy.base_url}/queue").json()
    assert queue == {"queue_running": [], "queue_pending": []}
    for prompt_id in (done_id, running_id, pending_id):
        assert history(comfy, prompt_id) == {}
    fresh = post_prompt(comfy, multi_graph())
    assert fresh.json()["number"] == 0
    comfy.wait_idle()
    assert fresh.json()["prompt_id"] in history(comfy, fresh.json()["prompt_id"])
    assert running_id not in comfy.finish_times


def test_stop_http_and_start_http_on_the_same_port(comfy):
    """stop_http() refuses connections (a crash loses state); start_http() listens again."""
    done_id, _ = run(comfy, multi_graph())
    port = comfy.port
    comfy.stop_http()
    with pytest.raises(httpx.ConnectError):
        HTTP.get(f"{comfy.base_url}/queue")
    comfy.start_http()
    assert comfy.port == port
    assert HTTP.get(f"{comfy.base_url}/queue").status_code == 200
    assert history(comfy, done_id) == {}


# --- recording, /free, executed outputs --------------------------------------------------


def test_every_request_is_recorded_as_sent(comfy):
    """Every route, /system_stats included, is recorded in `requests` with its path as sent."""
    HTTP.get(f"{comfy.base_url}/system_stats")
    HTTP.get(f"{comfy.base_url}/api/system_stats")
    HTTP.get(f"{comfy.base_url}/queue")
    assert comfy.requests == [
        ("GET", "/system_stats"),
        ("GET", "/api/system_stats"),
        ("GET", "/queue"),
    ]


def test_free_is_recorded_and_drops_the_cache(comfy):
    """POST /free answers 200 empty, is recorded, and free_memory makes an identical prompt run."""
    first_id, _ = run(comfy, multi_graph())
    body = {"unload_models": True, "free_memory": True}
    response = HTTP.post(f"{comfy.base_url}/free", json=body)
    assert (response.status_code, response.content) == (200, b"")
    second_id, second = run(comfy, multi_graph())
    assert comfy.executed == [first_id, second_id] and comfy.cached_runs == []
    assert second["outputs"]["2"]["images"][0]["filename"] == "still_00003_.png"
    HTTP.post(f"{comfy.base_url}/free", json={"unload_models": True})
    third_id, _ = run(comfy, multi_graph())
    assert comfy.cached_runs == [third_id]
    assert comfy.free_calls == [body, {"unload_models": True}]


def test_executed_outputs_are_downloadable_when_the_event_arrives(comfy):
    """Each file an `executed` event names is already served by /view when the event arrives."""
    comfy.execution_time_s = 0.3
    downloaded: dict[str, bytes] = {}
    with open_ws(comfy, "c1") as ws:
        prompt_id = post_prompt(comfy, multi_graph(), client_id="c1").json()["prompt_id"]
        for message in iter(lambda: json.loads(ws.recv(timeout=5)), None):
            if message["type"] == "executed":
                for item in message["data"]["output"]["images"]:
                    response = HTTP.get(f"{comfy.base_url}/view", params=item)
                    assert response.status_code == 200, item
                    downloaded[item["filename"]] = response.content
            if is_final(message):
                break
    outputs = history(comfy, prompt_id)[prompt_id]["outputs"]
    named = [i["filename"] for node in outputs.values() for i in node["images"]]
    assert sorted(downloaded) == sorted(named) and len(named) == 4
    assert all(data.startswith(b"\x89PNG\r\n\x1a\n") for data in downloaded.values())


# --- cut and hung requests ---------------------------------------------------------------


def test_cut_request_truncates_a_download_once(comfy):
    """cut_requests drops a /view after N body bytes; the next download is whole."""
    size = 3 * 1024 * 1024 + 5
    graph = {
        "1": {"class_type": "FakeBigOutput", "inputs": {"size_bytes": size, "filename_prefix": "b"}}
    }
    _, entry = run(comfy, graph)
    params = entry["outputs"]["1"]["images"][0]
    comfy.cut_requests("GET", "/view", 1, after_bytes=1000)
    received = 0
    with (
        pytest.raises(httpx.RemoteProtocolError),
        HTTP.stream("GET", f"{comfy.base_url}/view", params=params) as response,
    ):
        assert response.status_code == 200
        assert int(response.headers["content-length"]) == size
        for chunk in response.iter_bytes():
            received += len(chunk)
    assert received == 1000
    digest = hashlib.sha256(HTTP.get(f"{comfy.base_url}/view", params=params).content)
    assert digest.hexdigest() == big_output_sha256(params["filename"], size)


def test_cut_request_loses_the_answer_of_a_queued_prompt(comfy):
    """A POST /prompt cut before its answer is still queued and runs; JSON answers cut too."""
    prompt_id = str(uuid.uuid4())
    comfy.cut_requests("POST", "/prompt", 1)
    with pytest.raises(httpx.RemoteProtocolError):
        post_prompt(comfy, multi_graph(), prompt_id=prompt_id)
    comfy.wait_idle()
    assert comfy.submitted == [prompt_id] and prompt_id in history(comfy, prompt_id)
    assert post_prompt(comfy, multi_graph(color=2)).status_code == 200
    comfy.cut_requests("GET", "/queue", 1, after_bytes=5)
    with pytest.raises(httpx.RemoteProtocolError, match="received 5 bytes"):
        HTTP.get(f"{comfy.base_url}/queue")
    assert HTTP.get(f"{comfy.base_url}/queue").status_code == 200


def test_hung_requests_wait_for_release_or_stop(comfy):
    """Hung requests time out at the client, are answered after release_hung, dropped by stop."""
    url = f"{comfy.base_url}/queue"
    comfy.hang_requests("GET", "/queue", 2)
    with pytest.raises(httpx.ReadTimeout):
        HTTP.get(url, timeout=0.2)
    answers: list[Any] = []
    released = threading.Thread(target=lambda: answers.append(httpx.get(url, timeout=10)))
    released.start()
    wait_until(lambda: comfy.requests.count(("GET", "/queue")) == 2)
    comfy.release_hung()
    released.join(10)
    assert [a.status_code for a in answers] == [200]
    assert HTTP.get(url).status_code == 200  # both uses spent

    comfy.hang_requests("GET", "/history/*", 1)

    def doomed() -> None:
        try:
            answers.append(httpx.get(f"{comfy.base_url}/history/x", timeout=10))
        except httpx.TransportError as exc:
            answers.append(exc)

    dropped = threading.Thread(target=doomed)
    dropped.start()
    wait_until(lambda: ("GET", "/history/x") in comfy.requests)
    comfy.stop()
    dropped.join(10)
    assert isinstance(answers[-1], httpx.TransportError)


# --- generations ---------------------------------------------------------------------


def test_old_generation_keeps_any_prompt_id_and_has_no_jobs_api(comfy):
    """0.3.64 keeps any client prompt_id as given and answers /api/jobs with a plain 404."""
    assert post_prompt(comfy, multi_graph(), prompt_id="job-1").json()["prompt_id"] == "job-1"
    response = job(comfy, str(uuid.uuid4()))
    assert (response.status_code, response.text) == (404, "404: Not Found")


def test_old_generation_checks_newer_style_combos_only_when_running(comfy):
    """0.3.64 accepts an unknown upscale model; the loader then fails with an execution_error."""
    _, entry = run(comfy, upscale_graph("nope.pth"))
    event, data = entry["status"]["messages"][-1]
    assert (event, data["node_id"], data["exception_type"]) == (
        "execution_error",
        "2",
        "FileNotFoundError",
    )
    assert run(comfy, upscale_graph("RealESRGAN_x4plus.pth"))[1]["status"]["status_str"] == (
        "success"
    )


def test_newer_reports_its_version_and_accepts_canonical_ids(newer):
    """0.38 reports its version, keeps a canonical prompt_id and makes one when absent or null."""
    stats = HTTP.get(f"{newer.base_url}/system_stats").json()
    assert stats["system"]["comfyui_version"] == "0.38.0"
    assert {"comfy_package_versions", "deploy_environment"} <= stats["system"].keys()
    chosen = str(uuid.uuid4())
    assert post_prompt(newer, multi_graph(), prompt_id=chosen).json()["prompt_id"] == chosen
    for body in ({}, {"prompt_id": None}):
        made = post_prompt(newer, multi_graph(color=len(body)), **body).json()["prompt_id"]
        assert str(uuid.UUID(made)) == made and made != chosen
    newer.wait_idle()
    assert newer.submitted[0] == chosen and len(newer.submitted) == 3
    extra = HTTP.get(f"{newer.base_url}/history/{chosen}").json()[chosen]["prompt"][3]
    assert isinstance(extra["create_time"], int)


def test_newer_rejects_non_canonical_prompt_ids(newer):
    """0.38 refuses a prompt_id that is not a canonical lowercase UUID with the exact 400 body."""
    expected = {
        "error": {
            "type": "invalid_prompt_id",
            "message": "prompt_id must be a valid UUID",
            "details": "prompt_id must be a UUID string in canonical lowercase hyphenated form; "
            "omit it to let the server generate one",
            "extra_info": {},
        },
        "node_errors": {},
    }
    canonical = str(uuid.uuid4())
    for bad in (
        canonical.upper(),
        canonical.replace("-", ""),
        "{" + canonical + "}",
        f"urn:uuid:{canonical}",
        "job-1",
        42,
    ):
        response = post_prompt(newer, multi_graph(), prompt_id=bad)
        assert (response.status_code, response.json()) == (400, expected), bad
    assert newer.submitted == []


def test_newer_validation_names_missing_nodes_and_checks_combos(newer):
    """0.38 refuses unknown nodes as missing_node_type and newer-style combo values not offered."""
    graph = {
        "1": multi_graph()["1"],
        "2": {"class_type": "NoSuchNode", "inputs": {}, "_meta": {"title": "My node"}},
    }
    assert post_prompt(newer, graph).json() == {
        "error": {
            "type": "missing_node_type",
            "message": "Node 'My node' not found. The custom node may not be installed.",
            "details": "Node ID '#2'",
            "extra_info": {"node_id": "2", "class_type": "NoSuchNode", "node_title": "My node"},
        },
        "node_errors": {},
    }
    refused = post_prompt(newer, upscale_graph("nope.pth"))
    assert refused.status_code == 400
    [error] = refused.json()["node_errors"]["2"]["errors"]
    assert error["type"] == "value_not_in_list"
    assert error["details"] == "model_name: 'nope.pth' not in ['RealESRGAN_x4plus.pth']"


def test_newer_keeps_results_of_earlier_prompts(newer):
    """0.38's cache still holds a prompt's results after a different prompt ran."""
    _, first = run(newer, multi_graph())
    run(newer, multi_graph(color=5))
    third_id, third = run(newer, multi_graph())
    assert newer.cached_runs == [third_id] and third["outputs"] == first["outputs"]


def test_jobs_of_pending_running_and_unknown_prompts(newer):
    """Jobs show pending and in_progress prompts; cancel dequeues or interrupts; unknown is 404."""
    running_id, pending_id, unknown_id = (str(uuid.uuid4()) for _ in range(3))
    post_prompt(newer, sleeper_graph(), prompt_id=running_id, client_id="c1")
    wait_running(newer)
    newer.pause()
    post_prompt(newer, multi_graph(), prompt_id=pending_id)
    running = job(newer, running_id).json()
    assert running.keys() == {
        "id",
        "status",
        "priority",
        "create_time",
        "outputs_count",
        "previewable_outputs_count",
        "workflow",
    }
    assert (running["id"], running["status"], running["priority"]) == (running_id, "in_progress", 0)
    assert running["workflow"]["prompt"] == sleeper_graph()
    assert running["workflow"]["extra_data"]["client_id"] == "c1"
    pending = job(newer, pending_id).json()
    assert (pending["status"], pending["priority"], pending["outputs_count"]) == ("pending", 1, 0)

    assert cancel(newer, pending_id) == {"cancelled": True}
    assert newer.deleted == [pending_id]
    assert HTTP.get(f"{newer.base_url}/queue").json()["queue_pending"] == []
    gone = job(newer, pending_id)
    assert (gone.status_code, gone.json()) == (404, {"error": "Job not found"})
    assert cancel(newer, pending_id) == {"cancelled": False}

    assert cancel(newer, running_id) == {"cancelled": True}
    newer.resume()
    newer.wait_idle()
    cancelled = job(newer, running_id).json()
    assert cancelled["status"] == "cancelled" and "execution_error" not in cancelled
    assert cancelled["execution_start_time"] <= cancelled["execution_end_time"]
    assert newer.interrupted == [running_id]
    assert cancel(newer, running_id) == {"cancelled": False}

    assert job(newer, unknown_id).status_code == 404
    assert cancel(newer, unknown_id) == {"cancelled": False}
    assert cancel(newer, "not-even-a-uuid") == {"cancelled": False}


def test_jobs_of_finished_prompts(newer):
    """A finished job has counts, a preview and its history; a failed one its execution_error."""
    done_id = str(uuid.uuid4())
    post_prompt(newer, multi_graph(), prompt_id=done_id)
    newer.wait_idle()
    entry = history(newer, done_id)[done_id]
    done = job(newer, done_id).json()
    assert (done["status"], done["outputs_count"], done["previewable_outputs_count"]) == (
        "completed",
        4,
        4,
    )
    assert done["preview_output"] == {
        **entry["outputs"]["2"]["images"][0],
        "nodeId": "2",
        "mediaType": "images",
    }
    assert done["outputs"] == entry["outputs"] and done["execution_status"] == entry["status"]
    assert done["workflow"] == {"prompt": multi_graph(), "extra_data": entry["prompt"][3]}
    assert done["create_time"] == entry["prompt"][3]["create_time"]
    assert done["execution_start_time"] <= done["execution_end_time"]

    failed_id, _ = run(newer, escape_graph())
    failed = job(newer, failed_id).json()
    assert failed["status"] == "failed" and failed["outputs_count"] == 0
    assert (failed["execution_error"]["node_id"], failed["execution_error"]["node_type"]) == (
        "2",
        "SaveImage",
    )

    text_id, _ = run(newer, {"1": {"class_type": "FakeText", "inputs": {"value": "hello"}}})
    text = job(newer, text_id).json()
    assert (text["outputs_count"], text["previewable_outputs_count"]) == (0, 0)
    assert text["preview_output"] == {"content": "hello", "nodeId": "1", "mediaType": "text"}


# --- standalone ------------------------------------------------------------------------


def test_standalone_serves_until_sigterm(tmp_path):
    """`python -m fakes.comfyui` prints its URL, serves the asked version and exits 0 on SIGTERM."""
    command = [sys.executable, "-m", "fakes.comfyui", "--port", "0", "--root", str(tmp_path)]
    with subprocess.Popen(
        [*command, "--version", "0.38.0"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"http://[\d.]+:\d+", line)
        assert match, line
        stats = HTTP.get(f"{match.group(0)}/system_stats").json()
        assert stats["system"]["comfyui_version"] == "0.38.0"
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    assert (tmp_path / "output").is_dir()


def test_models_routes_list_a_real_directory(tmp_path: Path) -> None:
    """/models lists folder names; /models/{folder} the model files there (no .part); else 404."""
    models = tmp_path / "models"
    (models / "loras/sub").mkdir(parents=True)
    (models / "loras/sub/a.safetensors").write_bytes(b"a")
    (models / "loras/.b.safetensors.part").write_bytes(b"b")
    (models / "loras/notes.txt").write_text("n")
    with FakeComfyUI(tmp_path / "comfy", models_dir=models) as fake:
        assert "loras" in httpx.get(f"{fake.base_url}/models").json()
        assert httpx.get(f"{fake.base_url}/models/loras").json() == ["sub/a.safetensors"]
        assert httpx.get(f"{fake.base_url}/api/models/vae").json() == []
        assert httpx.get(f"{fake.base_url}/models/nope").status_code == 404
        (models / "checkpoints").mkdir()
        (models / "checkpoints/new.safetensors").write_bytes(b"c")
        info = httpx.get(f"{fake.base_url}/object_info/CheckpointLoaderSimple").json()
        assert (
            "new.safetensors" in info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
        )
