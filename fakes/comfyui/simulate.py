"""Running one prompt: which nodes run, in what order, what the WebSocket hears, and caching.

Per node: ``progress_state`` (running), ``executing``, [``progress``], ``executed`` (ui
output), ``progress_state`` (finished); see docs/comfyui-api.md for the whole sequence.
Inputs run before their readers, outputs in submission order. A cached node does not run
and nothing upstream of it is visited; a cached output still announces ``executed`` with
its earlier files. A node's cache key: its class, literal inputs and its inputs' keys.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fakes.comfyui.files import SaveRefused
from fakes.comfyui.host import Host
from fakes.comfyui.nodes import NODES
from fakes.comfyui.validation import is_link

OOM_TIPS = (
    "This error means you ran out of memory on your GPU.\n\nTIPS: If the workflow worked "
    "before you might have accidentally set the batch_size to a large number."
)
Send = Callable[[str, dict[str, Any], "str | None"], None]  # event, data, sid (None: everyone)


class Interrupted(Exception):
    """An interrupt reached a node."""


@dataclass
class Job:
    """A queued prompt; /queue lists it as [number, prompt_id, prompt, extra_data, outputs]."""

    number: float
    prompt_id: str
    graph: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]
    seq: int = 0

    def item(self) -> list[Any]:
        """The five-element list of /queue and /history."""
        return [self.number, self.prompt_id, self.graph, self.extra_data, self.outputs]

    @property
    def client(self) -> str | None:
        """The WebSocket client id it was submitted with."""
        client = self.extra_data.get("client_id")
        return None if client is None else str(client)


@dataclass
class Cached:
    """A node's result: its output values and its ui output (None for most nodes)."""

    values: tuple[Any, ...]
    ui: dict[str, Any] | None


def node_keys(graph: dict[str, Any], fingerprint: Callable[[str], str | None]) -> dict[str, str]:
    """Cache keys of every node: class + literal inputs + keys of linked nodes."""
    keys: dict[str, str] = {}

    def key(node_id: str, trail: frozenset[str]) -> str:
        if node_id not in graph or node_id in trail:
            return uuid.uuid4().hex  # a dangling or circular link is never cached
        if node_id not in keys:
            node, inputs = graph[node_id], graph[node_id].get("inputs") or {}
            parts: list[Any] = [node["class_type"]]
            if node["class_type"] == "LoadImage" and isinstance(inputs.get("image"), str):
                parts.append(fingerprint(inputs["image"]))
            for name, value in sorted(inputs.items()):
                link = is_link(value) and ["link", key(value[0], trail | {node_id}), value[1]]
                parts.append([name, link or value])
            text = json.dumps(parts, sort_keys=True, default=repr)
            keys[node_id] = hashlib.sha256(text.encode()).hexdigest()
        return keys[node_id]

    return {node_id: key(node_id, frozenset()) for node_id in graph}


def running_order(
    graph: dict[str, Any], outputs: list[str], cached: Callable[[str], bool]
) -> list[str]:
    """Nodes to visit, every input before its reader, not looking past cached results."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(node_id: str) -> None:
        if node_id in visiting:
            raise RecursionError(node_id)  # a loop in the graph
        if node_id not in order:
            visiting.add(node_id)
            for value in [] if cached(node_id) else graph[node_id].get("inputs", {}).values():
                if is_link(value) and value[0] in graph and not cached(value[0]):
                    visit(value[0])
            visiting.discard(node_id)
            order.append(node_id)

    for output in outputs:
        visit(output)
    return order


def _shown(value: Any) -> Any:
    return value if value is None or isinstance(value, int | float | bool | str) else str(value)


class InjectedFailure(Exception):
    """A failure armed with Host.fail_node()."""

    def __init__(self, exception_type: str, message: str) -> None:
        super().__init__(message)
        self.exception_type = exception_type


def _type_name(exc: Exception) -> str:
    """The exception type as ComfyUI reports it (module-qualified unless a builtin)."""
    if isinstance(exc, InjectedFailure):
        return exc.exception_type
    if isinstance(exc, SaveRefused):
        return "Exception"  # ComfyUI raises a bare Exception there
    kind = type(exc)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


class Simulation:
    """One prompt being run; also what its nodes' behaviours receive (see nodes.py)."""

    def __init__(
        self, job: Job, server: Host, cache: dict[str, Cached], interrupt: asyncio.Event
    ) -> None:
        self.job, self.graph, self.client = job, job.graph, job.client
        self.server, self.cache, self.interrupt = server, cache, interrupt
        self.node_seconds = 0.0
        self.last_node: str | None = None  # told to a client reconnecting mid-run
        self.messages: list[list[Any]] = []  # kept in /history's status
        self.progress: dict[str, dict[str, Any]] = {}
        self.done: list[str] = []
        self.ui: dict[str, dict[str, Any]] = {}

    # --- what nodes use besides .server (files, installed models) and .graph ----------------

    async def work(self, seconds: float, *, interruptible: bool) -> None:
        """Take some time; an interruptible wait ends early on an interrupt."""
        if not interruptible:
            await asyncio.sleep(max(seconds, 0.0))
            return
        try:
            await asyncio.wait_for(self.interrupt.wait(), max(seconds, 0.0))
        except TimeoutError:
            return
        raise Interrupted

    def step(self, value: int, total: int) -> None:
        """A sampler step: progress_state and progress, unless interrupted."""
        if self.interrupt.is_set():
            raise Interrupted
        assert self.last_node is not None
        self._progress(self.last_node, "running", value, total)
        data = {"value": value, "max": total, "prompt_id": self.job.prompt_id}
        self.send("progress", data | {"node": self.last_node})

    # --- events ---------------------------------------------------------------------------

    def send(self, event: str, data: dict[str, Any]) -> None:
        """To the submitting client; to every socket when it gave no client_id."""
        self.server.hub.send(event, data, self.client)

    def _record(self, event: str, data: dict[str, Any], *, broadcast: bool = False) -> None:
        """A message kept in /history, sent to the client (or, if broadcast, to all)."""
        data = {"prompt_id": self.job.prompt_id, **data, "timestamp": int(time.time() * 1000)}
        self.messages.append([event, data])
        if self.client is not None or broadcast:
            self.send(event, data)

    def _progress(self, node_id: str, state: str, value: float, total: float) -> None:
        self.progress[node_id] = {"value": value, "max": total, "state": state}
        prompt_id = self.job.prompt_id
        ids = {"prompt_id": prompt_id, "parent_node_id": None}
        nodes = {
            nid: entry | ids | {"node_id": nid, "display_node_id": nid, "real_node_id": nid}
            for nid, entry in self.progress.items()
        }
        self.send("progress_state", {"prompt_id": prompt_id, "nodes": nodes})

    def _finished(self, node_id: str) -> None:
        total = self.progress.get(node_id, {}).get("max", 1.0)
        self._progress(node_id, "finished", total, total)

    def _node_event(self, event: str, node_id: str, **data: Any) -> None:
        if self.client is not None:
            data |= {"node": node_id, "display_node": node_id, "prompt_id": self.job.prompt_id}
            self.send(event, data)

    # --- the run --------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        """Run the prompt; return its /history entry (without "prompt")."""
        server, prompt_id = self.server, self.job.prompt_id
        self.interrupt.clear()
        keys = node_keys(self.graph, server.files.fingerprint)

        def cached(node_id: str) -> bool:
            return keys[node_id] in self.cache

        self._record("execution_start", {})
        self._record("execution_cached", {"nodes": [n for n in self.graph if cached(n)]})
        server.node_times.setdefault(prompt_id, {})
        try:
            order = running_order(self.graph, self.job.outputs, cached)
        except RecursionError as loop:
            self._fail(str(loop), "Dependency cycle detected", "graph.DependencyCycleError", [], {})
            order = []
        to_run = [n for n in order if not cached(n)]
        self.node_seconds = server.execution_time_s / max(len(to_run), 1)
        if order:
            (server.executed if to_run else server.cached_runs).append(prompt_id)
        success = bool(order)
        for node_id in order:
            if cached(node_id):
                entry = self.cache[keys[node_id]]
                self.ui |= {node_id: entry.ui} if entry.ui else {}
                self._node_event("executed", node_id, output=entry.ui)
                self._finished(node_id)
            elif not await self._run_node(node_id, keys):
                success = False
                break
        if success:
            self._record("execution_success", {})
        server.finish_times[prompt_id] = time.monotonic()
        self.last_node = None
        meta = {n: {"node_id": n, "display_node": n, "parent_node": None} for n in self.ui}
        meta = {n: info | {"real_node_id": n} for n, info in meta.items()}
        status = {"status_str": "success" if success else "error", "completed": success}
        return {
            "outputs": dict(self.ui),
            "status": status | {"messages": self.messages},
            "meta": meta,
        }

    def _inputs(self, node_id: str, keys: dict[str, str]) -> dict[str, Any]:
        """The values a node receives: literals, linked results, and hidden inputs."""
        node = self.graph[node_id]
        declared = NODES[node["class_type"]].info["input"]
        known = declared.get("required", {}) | declared.get("optional", {})
        values: dict[str, Any] = {}
        for name, value in (node.get("inputs") or {}).items():
            if is_link(value):
                source = self.cache.get(keys.get(value[0], ""))
                values[name] = source.values[value[1]] if source else None
            elif name in known:
                values[name] = value
        if "hidden" in declared:
            values |= {
                "prompt": self.graph,
                "extra_pnginfo": self.job.extra_data.get("extra_pnginfo"),
            }
        return values

    async def _run_node(self, node_id: str, keys: dict[str, str]) -> bool:
        """Run one node; False if it failed or was interrupted (the run then stops)."""
        class_type = self.graph[node_id]["class_type"]
        node = NODES[class_type]
        self._progress(node_id, "running", 0.0, 1.0)
        values = self._inputs(node_id, keys)
        self.last_node = node_id
        self._node_event("executing", node_id)
        started = time.monotonic()
        try:
            if self.interrupt.is_set():
                raise Interrupted
            if not node.own_pace:
                await self.work(self.node_seconds, interruptible=node.interruptible)
            failure = self.server.node_failure(class_type)
            if failure is not None:
                raise InjectedFailure(*failure)
            result, ui = await node.behaviour(self, values)
        except Interrupted:
            self.server.interrupted.append(self.job.prompt_id)
            where = {"node_id": node_id, "node_type": class_type, "executed": list(self.done)}
            self._record("execution_interrupted", where, broadcast=True)
            return False
        except Exception as exc:  # what the node raised: an execution_error
            kind, frames = _type_name(exc), traceback.format_tb(exc.__traceback__)
            tips = OOM_TIPS if kind == "torch.OutOfMemoryError" else ""
            shown = {name: [_shown(v)] for name, v in values.items()}
            self._fail(node_id, f"{exc}\n{tips}", kind, frames, shown)
            return False
        finally:
            self.server.node_times[self.job.prompt_id][node_id] = (started, time.monotonic())
        if ui:
            self.ui[node_id] = ui
            self._node_event("executed", node_id, output=ui)
        self.cache[keys[node_id]] = Cached(result, ui or None)
        self._finished(node_id)
        self.done.append(node_id)
        return True

    def _fail(self, node_id: str, message: str, kind: str, frames: list[str], inputs: Any) -> None:
        where = {"node_id": node_id, "node_type": self.graph[node_id]["class_type"]}
        where["executed"] = list(self.done)
        error = {"exception_message": message, "exception_type": kind, "traceback": frames}
        error |= {"current_inputs": inputs, "current_outputs": list(self.graph)}
        self._record("execution_error", where | error)
