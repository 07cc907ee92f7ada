"""What items 1 and 2 run against: the fake ComfyUI process, or a real ComfyUI by URL.

Both give graphs that ComfyUI cannot answer from its cache and, per prompt, when
ComfyUI started and finished executing it in this process's ``time.monotonic()``.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Protocol

from benchmarks.common import WORKFLOWS, Graph, sleep_graph, smoke_graph
from benchmarks.fakeproc import FakeProcess, PromptTimes
from comfyui_worker.comfy.client import ComfyClient
from comfyui_worker.workflow.templates import Template, load_template, render

FAST_S = 0.1
SHORT_S = 0.01  # a task shorter than the worker's own cycle (issue 18)
_colors = itertools.count(0x102030, 7919)  # every graph of a run gets a new colour


def next_color() -> int:
    """A colour no earlier graph of this run used (ComfyUI caches identical nodes)."""
    return next(_colors) % 0xFFFFFF


class Target(Protocol):
    """A ComfyUI to measure against."""

    label: str
    base_url: str
    is_fake: bool

    def graph(self, prefix: str, exec_s: float | None = None) -> Graph:
        """A fresh smoke graph; with ``exec_s`` the fake sleeps that long (real: ignored)."""
        ...

    def fast_graph(self, prefix: str) -> Graph:
        """A fresh graph of about 100 ms: a fast turbo/LCM workflow's cost."""
        ...

    def short_graph(self, prefix: str) -> Graph:
        """A fresh graph of about 10 ms: shorter than the worker's cycle for one task."""
        ...

    def times(self, client: ComfyClient, prompt_ids: list[str]) -> dict[str, PromptTimes]:
        """Per prompt: ComfyUI's received/started/finished times in our monotonic clock."""
        ...


class FakeTarget:
    """The fake ComfyUI in its own process; exact monotonic times from its introspection."""

    is_fake = True

    def __init__(self, fake: FakeProcess) -> None:
        self.fake = fake
        self.base_url = fake.base_url
        self.label = f"fake ComfyUI (separate process, pid {fake.pid})"

    def graph(self, prefix: str, exec_s: float | None = None) -> Graph:
        """Smoke graph, with a FakeSleep of ``exec_s`` if given."""
        if exec_s is None:
            return smoke_graph(next_color(), prefix)
        return sleep_graph(next_color(), exec_s, prefix)

    def fast_graph(self, prefix: str) -> Graph:
        """The smoke graph with a 100 ms FakeSleep."""
        return sleep_graph(next_color(), FAST_S, prefix)

    def short_graph(self, prefix: str) -> Graph:
        """The smoke graph with a 10 ms FakeSleep."""
        return sleep_graph(next_color(), SHORT_S, prefix)

    def times(self, client: ComfyClient, prompt_ids: list[str]) -> dict[str, PromptTimes]:
        """From the fake's received_times/started_times/finish_times."""
        return self.fake.times(prompt_ids)


class RealTarget:
    """A real ComfyUI: workflows/smoke.json; times from history's ms-epoch timestamps."""

    is_fake = False

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.label = f"ComfyUI at {self.base_url}"
        self.template: Template = load_template(WORKFLOWS / "smoke.json")

    def graph(self, prefix: str, exec_s: float | None = None) -> Graph:
        """smoke.json rendered with a new colour (``exec_s`` cannot be controlled)."""
        graph = render(self.template, {"color": next_color()}).graph
        for node in graph.values():
            if node.get("class_type") == "SaveImage":
                node["inputs"]["filename_prefix"] = prefix
        return graph

    def fast_graph(self, prefix: str) -> Graph:
        """smoke.json at 512x512 with blur radius 8: about 100 ms on the reference CPU."""
        return self._sized(prefix, side=512, blur_radius=8)

    def short_graph(self, prefix: str) -> Graph:
        """smoke.json at 320x320 with blur radius 4: about 7-10 ms on the reference CPU."""
        return self._sized(prefix, side=320, blur_radius=4)

    def _sized(self, prefix: str, *, side: int, blur_radius: int) -> Graph:
        graph = self.graph(prefix)
        for node in graph.values():
            if node.get("class_type") == "EmptyImage":
                node["inputs"].update(width=side, height=side)
            if node.get("class_type") == "ImageBlur":
                node["inputs"]["blur_radius"] = blur_radius
        return graph

    def times(self, client: ComfyClient, prompt_ids: list[str]) -> dict[str, PromptTimes]:
        """execution_start/execution_success timestamps (ms since the epoch) of each prompt."""
        offset = time.time() - time.monotonic()
        spans = {}
        for pid in prompt_ids:
            entry = client.history(pid)
            stamps = entry.timestamps_ms() if entry is not None else {}
            start, end = stamps.get("execution_start"), stamps.get("execution_success")
            if not (isinstance(start, int | float) and isinstance(end, int | float)):
                raise RuntimeError(f"prompt {pid} has no execution timestamps in /history")
            spans[pid] = PromptTimes(math.nan, start / 1000 - offset, end / 1000 - offset)
        return spans
