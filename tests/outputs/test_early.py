"""Outputs saved while the prompt still runs, from ComfyUI's `executed` events (real HTTP + WS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from comfyui_worker.outputs.collect import OutputRef
from comfyui_worker.outputs.download import Downloader
from comfyui_worker.outputs.early import EarlySaver
from comfyui_worker.outputs.store import LocalStore
from comfyui_worker.run.execution import Runner
from comfyui_worker.settings import ComfySettings
from fakes.comfyui import FakeComfyUI
from tests.conftest import make_request


def two_outputs() -> dict[str, Any]:
    """Output A, then a one-second node, then output B."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 3},
        },
        "2": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": "early/a"},
        },
        "3": {"class_type": "FakeSleep", "inputs": {"value": ["1", 0], "seconds": 1.0}},
        "4": {
            "class_type": "SaveImage",
            "inputs": {"images": ["3", 0], "filename_prefix": "early/b"},
        },
    }


def views(comfy: FakeComfyUI) -> int:
    return sum(1 for method, path in comfy.requests if (method, path) == ("GET", "/view"))


@pytest.mark.slow  # a second or more of real waiting
def test_an_output_is_saved_while_later_nodes_still_run(runner: Runner, comfy: FakeComfyUI):
    """Output A is fetched during the one-second node; each file is fetched once in all."""
    seen_before_b: list[int] = []

    def on_event(kind: str, data: dict[str, Any]) -> None:
        if kind == "executing" and data.get("node") == "4":
            seen_before_b.append(views(comfy))

    result = runner.run(make_request(two_outputs()), on_event=on_event)
    assert seen_before_b == [1]
    assert sorted(o.node_id for o in result.outputs) == ["2", "4"]
    assert views(comfy) == 2 and all(Path(o.path).is_file() for o in result.outputs)


def test_an_early_copy_history_does_not_list_is_discarded(
    comfy: FakeComfyUI, settings: ComfySettings, tmp_path: Path
):
    """/history is the truth: a file announced early but not listed at the end is deleted."""
    (comfy.root / "output" / "stray.png").write_bytes(b"\x89PNG stray")
    (comfy.root / "output" / "kept.png").write_bytes(b"\x89PNG kept")
    store = LocalStore(tmp_path / "out", fsync=False).run("r")
    with Runner(settings) as runner:
        downloader = Downloader(runner.client, store, max_bytes=10**6)
        early = EarlySaver(downloader, include_temp=False)
        for name in ("stray.png", "kept.png"):
            output = {"images": [{"filename": name, "subfolder": "", "type": "output"}]}
            early.offer("executed", {"node": "9", "output": output})
        kept = OutputRef("9", "images", "kept.png", "", "output")
        [saved] = downloader.save_all([kept], early.finish())
    assert saved.filename == "kept.png" and Path(saved.path).is_file()
    assert not (tmp_path / "out" / "r" / "stray.png").exists()
    assert views(comfy) == 2  # kept.png was not fetched a second time


def test_the_run_location_is_readied_when_execution_starts(
    comfy: FakeComfyUI, settings: ComfySettings, tmp_path: Path
):
    """execution_start prepares the run directory, so no save waits for it afterwards."""
    store = LocalStore(tmp_path / "out", fsync=False).run("r")
    with Runner(settings) as runner:
        early = EarlySaver(Downloader(runner.client, store, max_bytes=10**6), include_temp=False)
        early.offer("execution_start", {"prompt_id": "p"})
        assert early.finish() == {}
    assert (tmp_path / "out" / "r").is_dir()
