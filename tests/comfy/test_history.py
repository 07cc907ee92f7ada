"""A /history entry read once into ``HistoryEntry``, as captured from ComfyUI 0.3.64."""

from __future__ import annotations

import json

from comfyui_worker.comfy.history import HistoryEntry
from tests import FIXTURES


def captured(name: str) -> dict[str, object]:
    """The one entry of a captured /history/{id} answer."""
    payload = json.loads((FIXTURES / "comfyui" / name).read_text())
    (entry,) = payload.values()
    return dict(entry)


def test_a_captured_success_reads_its_graph_outputs_and_timestamps():
    """The graph ComfyUI ran, its outputs and the execution_start/success stamps."""
    raw = captured("get_history_prompt_id_success.json")
    entry = HistoryEntry.parse(raw)
    assert entry.succeeded and entry.status == "success"
    assert entry.graph == raw["prompt"][2]  # type: ignore[index]
    assert entry.outputs == raw["outputs"]
    stamps = entry.timestamps_ms()
    assert stamps["execution_success"] >= stamps["execution_start"] > 0


def test_an_entry_without_status_is_a_success_as_on_old_servers():
    """No ``status`` at all: old servers wrote none for a success."""
    entry = HistoryEntry.parse({"outputs": {}})
    assert entry.succeeded and entry.messages == {} and entry.graph is None


def test_a_captured_error_keeps_its_messages_by_kind():
    """``status.messages`` becomes {kind: data}; the failing node is there."""
    entry = HistoryEntry.parse(captured("get_history_prompt_id_execution_error.json"))
    assert not entry.succeeded and entry.status == "error"
    assert entry.messages["execution_error"]["node_id"]


def test_malformed_parts_read_as_absent():
    """A broken prompt, status or message list never raises; bool stamps are not numbers."""
    entry = HistoryEntry.parse(
        {
            "prompt": "not a list",
            "status": {"messages": [["x"], "y", ["execution_start", {"timestamp": True}]]},
        }
    )
    assert entry.graph is None and entry.succeeded
    assert entry.timestamps_ms() == {}
    assert HistoryEntry.parse({"status": "weird"}).succeeded
