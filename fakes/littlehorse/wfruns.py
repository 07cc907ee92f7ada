"""WfRun RPCs (RunWf, StopWfRun, ResumeWfRun, DeleteWfRun) and their test helpers.

Checks and messages follow ``LHServerListener.runWf``, ``RunWfRequestModel``,
``ThreadSpecModel.validateStartVariables``, ``StopWfRunRequestModel``,
``ResumeWfRunRequestModel`` and ``InternalDeleteWfRunRequestModel``.
"""

# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import uuid
from collections.abc import Iterable

import grpc
from google.protobuf.empty_pb2 import Empty  # type: ignore[attr-defined]
from littlehorse.model import (
    DeleteWfRunRequest,
    LHStatus,
    ManualHalt,
    ResumeWfRunRequest,
    RunWfRequest,
    StopWfRunRequest,
    ThreadHaltReason,
    WfRun,
    WfRunVariableAccessLevel,
)

from fakes.littlehorse.core import ApiError, abort, copied
from fakes.littlehorse.engine import WfEngine
from fakes.littlehorse.halting import keep_halt_reasons
from fakes.littlehorse.records import WfRunRecord, key_of
from fakes.littlehorse.shapes import TERMINATED, unsupported
from fakes.littlehorse.values import (
    compact_values,
    enum_name,
    incompatibility,
    is_valid_name,
    type_def_of,
    type_name,
)

_INVALID = grpc.StatusCode.INVALID_ARGUMENT


class WfRunRpcs(WfEngine):
    """Starting, stopping, resuming and deleting WfRuns."""

    # ------------------------------------------------------------------ test API

    def wf_run(self, wf_run_id: str) -> WfRun | None:
        """A copy of the WfRun (as GetWfRun returns it), or None."""
        with self._cond:
            record = self._wf_runs.get(wf_run_id)
            return None if record is None else copied(record.run)

    def wf_run_ids(self) -> list[str]:
        """The ids of every WfRun the fake holds, in the order they were started."""
        with self._cond:
            return list(self._wf_runs)

    def wait_wf_run(
        self,
        wf_run_id: str,
        statuses: int | Iterable[int] = TERMINATED,
        timeout_s: float = 30,
    ) -> WfRun:
        """Block until the WfRun exists with one of ``statuses`` (default: terminated)."""
        wanted = {statuses} if isinstance(statuses, int) else set(statuses)

        def probe() -> WfRun | None:
            record = self._wf_runs.get(wf_run_id)
            if record is None or record.run.status not in wanted:
                return None
            return copied(record.run)

        names = sorted(enum_name(LHStatus, s) for s in wanted)
        return self.wait_for(probe, timeout_s, f"WfRun {wf_run_id} in {names}")

    # ------------------------------------------------------------------ RPCs

    def RunWf(self, request: RunWfRequest, context: grpc.ServicerContext) -> WfRun:
        """Validate and start a WfRun; an id already taken is ALREADY_EXISTS."""
        try:
            with self._cond:
                return copied(self._run_wf(request).run)
        except ApiError as error:
            abort(context, error.code, error.details)

    def StopWfRun(self, request: StopWfRunRequest, context: grpc.ServicerContext) -> Empty:
        """Halt a ThreadRun (0: the WfRun) with a MANUAL_HALT reason."""
        with self._cond:
            record = self._wf_runs.get(request.wf_run_id.id)
            error = _thread_error(
                record, request.thread_run_number, "stop", "Couldn't find specified WfRun"
            )
            if error is None and record is not None:
                thread = record.thread(request.thread_run_number)
                if not any(r.WhichOneof("reason") == "manual_halt" for r in thread.halt_reasons):
                    self._halt(record, thread, ThreadHaltReason(manual_halt=ManualHalt()))
                    self._advance(record)
        if error is not None:
            abort(context, error.code, error.details)
        return Empty()

    def ResumeWfRun(self, request: ResumeWfRunRequest, context: grpc.ServicerContext) -> Empty:
        """Remove the ThreadRun's MANUAL_HALT reasons and advance."""
        with self._cond:
            record = self._wf_runs.get(request.wf_run_id.id)
            error = _thread_error(
                record, request.thread_run_number, "resume", "Couldn't find provided WfRun"
            )
            if error is None and record is not None:
                thread = record.thread(request.thread_run_number)
                keep_halt_reasons(thread, lambda r: r.WhichOneof("reason") != "manual_halt")
                self._advance(record)
        if error is not None:
            abort(context, error.code, error.details)
        return Empty()

    def DeleteWfRun(self, request: DeleteWfRunRequest, context: grpc.ServicerContext) -> Empty:
        """Delete the WfRun with its NodeRuns, Variables, TaskRuns and Checkpoints.

        Like the server it does not check the status, and an unknown id is OK. Queued
        ScheduledTasks of its TaskRuns stay queued: the PollTask stream that takes one is
        ended with UNAVAILABLE. A running attempt's later report is ignored and its
        PutCheckpoint gets INVALID_ARGUMENT.
        """
        with self._cond:
            record = self._wf_runs.pop(request.id.id, None)
            if record is not None:
                owned = {k for k, run in self._task_runs.items() if run.owner == record.id}
                for key in owned:
                    self._task_runs.pop(key, None)
                    self.checkpoints.pop(key, None)
                for queue in self._queues.values():
                    for task in queue:
                        if key_of(task.task_run_id) in owned:
                            self._orphaned[id(task)] = task
                self._cond.notify_all()
        return Empty()

    # ------------------------------------------------------------------ internals

    def _run_wf(self, request: RunWfRequest) -> WfRunRecord:
        name = request.wf_spec_name
        if not name:
            raise ApiError(_INVALID, "Missing required argument 'wf_spec_name'")
        if request.HasField("id") and not is_valid_name(request.id):
            raise ApiError(_INVALID, "Optional argument 'id' must be a valid hostname")
        spec = self._find_wf_spec(
            name,
            request.major_version if request.HasField("major_version") else None,
            request.revision if request.HasField("revision") else None,
        )
        if spec is None:
            raise ApiError(grpc.StatusCode.NOT_FOUND, "Couldn't find specified WfSpec")
        wf_run_id = request.id if request.HasField("id") else uuid.uuid4().hex
        if wf_run_id in self._wf_runs:
            raise ApiError(
                grpc.StatusCode.ALREADY_EXISTS, f"WfRun with id {wf_run_id} already exists!"
            )
        if request.HasField("parent_wf_run_id"):
            raise ApiError(_INVALID, f"WfSpec {name} does not refer to a parent WfSpec.")
        thread_name = spec.entrypoint_thread_name
        problem = _start_variables_problem(thread_name, spec.thread_specs[thread_name], request)
        if problem is not None:
            raise ApiError(_INVALID, f"ThreadSpec {thread_name} invalid: {problem}")
        reason = unsupported(spec)
        if reason is not None:
            raise ApiError(grpc.StatusCode.UNIMPLEMENTED, reason)
        variables = {k: compact_values(copied(v)) for k, v in request.variables.items()}
        return self._start_wf_run(wf_run_id, spec, variables)


def _start_variables_problem(thread_name: str, thread_spec, request: RunWfRequest) -> str | None:
    """``ThreadSpecModel.validateStartVariables``."""
    defs = {d.var_def.name: d for d in thread_spec.variable_defs}
    for var_name, thread_var in defs.items():
        type_def = type_def_of(thread_var.var_def)
        if var_name not in request.variables:
            if thread_var.required:
                return (
                    f"Must provide required input variable {var_name} of type {type_name(type_def)}"
                )
            continue
        problem = incompatibility(type_def, request.variables[var_name])
        if problem is not None:
            return f"Variable {var_name} invalid: {problem}"
        if thread_var.access_level == WfRunVariableAccessLevel.INHERITED_VAR:
            return f"Variable {var_name} is an inherited var but it was provided as input"
    for var_name in request.variables:
        if var_name not in defs:
            return f"Var {var_name} provided but not needed for thread {thread_name} Current variables{list(defs)}"
    return None


def _thread_error(
    record: WfRunRecord | None, number: int, verb: str, missing: str
) -> ApiError | None:
    if record is None:
        return ApiError(grpc.StatusCode.NOT_FOUND, missing)
    if number < 0 or number > record.run.greatest_threadrun_number:
        return ApiError(_INVALID, f"Tried to {verb} a non-existent thread id.")
    return None
