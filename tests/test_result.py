"""The result model: what LittleHorse receives stays small whatever ComfyUI returned."""

from __future__ import annotations

import json
import math
from typing import Any

from comfyui_worker.result import ComfyInfo, RunResult, SavedOutput, Timings

LIMIT = 64 * 1024


def result(**changes: Any) -> RunResult:
    base: dict[str, Any] = {
        "prompt_id": "p",
        "run_key": "wf/task",
        "output_dir": "/out/wf/task",
        "outputs": [
            SavedOutput(
                node_id="9",
                key="images",
                filename="a.png",
                subfolder="",
                comfy_type="output",
                path="/out/wf/task/a.png",
                relative_path="a.png",
                size_bytes=1,
                sha256="0" * 64,
                media_type="image/png",
            )
        ],
        "text": {},
        "values": {},
        "skipped_temp_outputs": 0,
        "template": None,
        "params": {},
        "timings_ms": Timings(queued=0, executing=1, downloading=1, total=2, comfy_execution=1),
        "comfyui": ComfyInfo(base_url="http://c", version="0.3.64"),
        "worker_version": "0.1.0",
        "manifest": "/out/wf/task/manifest.json",
    }
    return RunResult(**{**base, **changes})


def size(value: Any) -> int:
    return len(json.dumps(value))


def test_a_small_result_is_whole():
    """Nothing is cut when everything fits, and it says so."""
    full = result().to_json(LIMIT)
    assert full["outputs"][0]["filename"] == "a.png" and full["text_truncated"] is False


def test_a_huge_text_keeps_a_prefix():
    """A 250,000-character text keeps its beginning, flagged, within the budget."""
    text = "abc" * 83_334
    bounded = result(text={"7": [text]}).to_json(LIMIT)
    kept = bounded["text"]["7"][0]
    assert text.startswith(kept) and len(kept) > 1000 and bounded["text_truncated"]
    assert size(bounded) <= LIMIT


def test_half_a_million_empty_strings_are_bounded():
    """Many tiny items are counted by bytes too."""
    bounded = result(text={"7": [""] * 500_000}).to_json(LIMIT)
    assert bounded["text_truncated"] and size(bounded) <= LIMIT


def test_a_huge_value_is_cut_with_a_marker():
    """A 5 MB non-file value is cut, and the cut is flagged."""
    bounded = result(values={"4": {"blob": "x" * 5_000_000}}).to_json(LIMIT)
    assert bounded["values_truncated"] and size(bounded) <= LIMIT


def test_huge_params_are_cut_too():
    """Everything counts: parameters echoed back are bounded as well."""
    bounded = result(params={"prompt": "p" * 2_000_000}).to_json(LIMIT)
    assert bounded["params_truncated"] and size(bounded) <= LIMIT


def test_the_result_is_always_strict_json():
    """NaN from a custom node's value is carried as text, not as invalid JSON."""
    bounded = result(values={"4": {"score": math.nan}}).to_json(LIMIT)
    assert json.loads(json.dumps(bounded), parse_constant=lambda c: 1 / 0) is not None
