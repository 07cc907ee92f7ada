"""LittleHorse's API for the commands (register, check, jobs): blocking calls.

Every gRPC failure becomes one of our errors (``rpc.to_error``), with the address and
what to check, so ``main.py`` prints one line instead of a gRPC traceback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from littlehorse import create_task_def
from littlehorse.config import LHConfig
from littlehorse.model import LHStatus, RunWfRequest, TaskDefId, WfRun, WfRunId, WfSpec
from littlehorse.workflow import Workflow

from comfyui_worker.errors import LittleHorseError, NotFoundError
from comfyui_worker.lh.rpc import code_of, to_error

CALL_TIMEOUT_S = 10.0
VISIBLE_TIMEOUT_S = 30.0
VISIBLE_POLL_S = 0.05
_T = TypeVar("_T")


def lh_config() -> LHConfig:
    """The SDK's own config: the ``LHC_*`` variables pass through unchanged."""
    return LHConfig()


class LittleHorse:
    """The calls the commands make, each mapped to our errors."""

    def __init__(self, config: LHConfig, address: str, timeout_s: float = CALL_TIMEOUT_S) -> None:
        self.config = config
        self.address = address
        self.timeout_s = timeout_s

    def call(self, name: str, request: Any) -> Any:
        """One RPC on the blocking stub, by name, with the call timeout."""
        return self.mapped(
            name, lambda: getattr(self.config.stub(), name)(request, timeout=self.timeout_s)
        )

    def mapped(self, what: str, call: Callable[[], _T]) -> _T:
        """Run ``call``, turning any gRPC failure into our error."""
        try:
            return call()
        except grpc.RpcError as exc:
            raise self.error(exc, what) from None

    def run_wf(self, request: RunWfRequest) -> WfRun | None:
        """Start a WfRun; None when its id is taken (so a caller-chosen id runs once)."""
        try:
            run: WfRun = self.config.stub().RunWf(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            if code_of(exc) == grpc.StatusCode.ALREADY_EXISTS:
                return None
            raise self.error(exc, "RunWf") from None
        return run

    def error(self, exc: grpc.RpcError, what: str) -> LittleHorseError:
        """Our error for a failed call (``rpc.to_error`` with this address)."""
        return to_error(exc, what, self.address)

    def ping(self, task_name: str) -> str:
        """Prove LittleHorse answers; say whether the TaskDef exists."""
        try:
            self.call("GetTaskDef", TaskDefId(name=task_name))
        except NotFoundError:
            return f"TaskDef {task_name} not registered yet"
        return f"TaskDef {task_name} registered"

    def ensure_task_def(self, task_name: str, fn: Callable[..., Any]) -> Any:
        """The TaskDef, registered from ``fn``'s signature if LittleHorse lacks it."""
        try:
            return self.call("GetTaskDef", TaskDefId(name=task_name))
        except NotFoundError:
            self.mapped(
                "PutTaskDef", lambda: create_task_def(fn, task_name, self.config, timeout=30)
            )
            return self.visible("GetTaskDef", TaskDefId(name=task_name))

    def visible(self, name: str, request: Any) -> Any:
        """A read of something just written, repeated until LittleHorse serves it.

        The server applies a write through Kafka and answers reads from its store: a
        TaskDef read right after PutTaskDef, or a RunWf right after PutWfSpec, is
        NOT_FOUND for a few hundred milliseconds.
        """
        deadline = time.monotonic() + VISIBLE_TIMEOUT_S
        while True:
            try:
                return self.call(name, request)
            except NotFoundError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(VISIBLE_POLL_S)

    def stopped(self, wf_run_id: str) -> bool | None:
        """Whether someone stopped the WfRun (its threads halting); None if unknown.

        StopWfRun leaves the WfRun RUNNING while its task runs: the entrypoint thread is
        HALTING until the task reports, so the threads are what tell.
        """
        try:
            wf_run = self.call("GetWfRun", WfRunId(id=wf_run_id))
        except NotFoundError:
            return None
        except LittleHorseError:
            return False  # cannot tell now; ask again at the next tick
        halting = (LHStatus.HALTING, LHStatus.HALTED)
        return wf_run.status in halting or any(t.status in halting for t in wf_run.thread_runs)

    def put_wf_spec(self, workflow: Workflow) -> WfSpec:
        """Register a WfSpec (a new revision if it changed); return once RunWf can use it."""
        spec: WfSpec = self.call("PutWfSpec", workflow.compile())
        self.visible("GetWfSpec", spec.id)
        return spec
