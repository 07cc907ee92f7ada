"""Progress lines for `main.py run` from ComfyUI's events."""

from __future__ import annotations

import io

from comfyui_worker.run.progress import Progress

GRAPH = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {}},
    "2": {"class_type": "KSampler", "inputs": {}},
    "3": {"class_type": "SaveImage", "inputs": {}},
}


def test_nodes_steps_and_end_are_reported_without_a_tty():
    """Off a terminal: cached count, node n/m with its class, a few step lines, the end."""
    out = io.StringIO()
    progress = Progress(GRAPH, out)
    progress("execution_cached", {"nodes": ["1"]})
    progress("executing", {"node": "2"})
    for step in range(1, 21):
        progress("progress", {"value": step, "max": 20, "node": "2"})
    progress("executing", {"node": "3"})
    progress("execution_success", {})
    lines = out.getvalue().splitlines()
    assert lines[0] == "1 of 3 nodes cached"
    assert lines[1] == "node 2/3: 2 (KSampler)"
    steps = [line for line in lines if "step" in line]
    assert steps[0] == "  step 1/20" and steps[-1] == "  step 20/20" and len(steps) <= 6
    assert lines[-2:] == ["node 3/3: 3 (SaveImage)", "execution success"]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_that_is_closed_before_the_next_line():
    """On a terminal, steps redraw one bar line; the next message starts on a new line."""
    out = Tty()
    progress = Progress(GRAPH, out)
    progress("progress", {"value": 10, "max": 20})
    progress("executing", {"node": "3"})
    text = out.getvalue()
    assert text == "\r  [############------------] step 10/20\nnode 1/3: 3 (SaveImage)\n"
