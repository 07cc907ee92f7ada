"""The WfRun engine: ThreadRuns walking ENTRYPOINT -> TASK -> EXIT nodes, as the server does.

It follows ``WfRunModel.advance`` / ``ThreadRunModel.advance``: every time something
changes (a RunWf, a claimed or finished TaskAttempt, a Stop/Resume) each ThreadRun is
advanced until nothing moves. A failed node either fails its ThreadRun (no handler)
or HALTs it and starts a FAILURE_HANDLER ThreadRun; a handler that fails takes its
parent down with the same failure (``failWithoutGrace``), one that completes lets the
parent go on past the node. A TASK node cannot halt until its TaskRun is done, so a
stopped WfRun keeps its ThreadRun HALTING (and the WfRun RUNNING) while the attempt runs.

Only the shapes the SDK produces for ``execute``/``assign``/``handle_*``/``fail``/
``complete`` are interpreted; ``unsupported()`` names anything else so RunWf can refuse.
"""

# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

from datetime import datetime

from littlehorse.model import (
    Failure,
    FailureBeingHandled,
    HandlingFailureHaltReason,
    LHStatus,
    NodeRun,
    NodeRunId,
    PendingFailureHandler,
    TaskAttempt,
    TaskDefId,
    TaskNodeReference,
    TaskRun,
    TaskRunId,
    TaskRunSource,
    TaskStatus,
    ThreadHaltReason,
    ThreadRun,
    ThreadType,
    Variable,
    VariableId,
    VariableValue,
    VarNameAndVal,
    WfRun,
    WfRunId,
    WfRunVariableAccessLevel,
    WfSpec,
)

from fakes.littlehorse.core import now
from fakes.littlehorse.halting import WfHalting, keep_halt_reasons
from fakes.littlehorse.records import TaskRunRecord, WfRunRecord
from fakes.littlehorse.shapes import (
    DEFAULT_TASK_TIMEOUT_S,
    TERMINATED,
    NodeFailure,
    VarSubError,
    handles,
    stamp,
    task_key,
)
from fakes.littlehorse.taskruns import STILL_RUNNING
from fakes.littlehorse.values import cast, failure_status, incompatibility, is_null, type_def_of

_MAX_ADVANCES = 1000  # like LHConstants.MAX_STACK_FRAMES_PER_COMMAND: a guard

# (TaskAttempt status) -> (failure name, message): TaskAttemptModel.getFailureCode/Message.
_TASK_FAILURES = {
    TaskStatus.TASK_EXCEPTION: ("", ""),  # the exception's own name and message
    TaskStatus.TASK_FAILED: ("TASK_FAILURE", "Task execution failed"),
    TaskStatus.TASK_TIMEOUT: ("TIMEOUT", "Task timed out"),
    TaskStatus.TASK_OUTPUT_SERDE_ERROR: (
        "VAR_MUTATION_ERROR",
        "Failed serializing or deserializing Task Output",
    ),
    TaskStatus.TASK_INPUT_VAR_SUB_ERROR: (
        "VAR_SUB_ERROR",
        "Failed calculating Task Input Variables",
    ),
}


class WfEngine(WfHalting):
    """Runs WfRuns; every method expects the caller to hold the fake's lock."""

    def _task_run_changed(self, record: TaskRunRecord) -> None:
        if record.owner is not None and record.owner in self._wf_runs:
            self._advance(self._wf_runs[record.owner])

    # ------------------------------------------------------------------ starting

    def _start_wf_run(
        self, wf_run_id: str, spec: WfSpec, variables: dict[str, VariableValue]
    ) -> WfRunRecord:
        """``WfSpecModel.startNewRun`` then ``advance``."""
        run = WfRun(id=WfRunId(id=wf_run_id), wf_spec_id=spec.id, status=LHStatus.RUNNING)
        stamp(run, "start_time")
        record = WfRunRecord(run, spec)
        self._wf_runs[wf_run_id] = record
        self._start_thread(
            record, spec.entrypoint_thread_name, None, variables, ThreadType.ENTRYPOINT
        )
        self._advance(record)
        return record

    def _start_thread(
        self,
        wf: WfRunRecord,
        name: str,
        parent: int | None,
        variables: dict[str, VariableValue],
        kind: int,
    ) -> ThreadRun:
        """``WfRunModel.startThread`` + ``ThreadRunModel.createVariablesAndStart``."""
        run = wf.run
        if parent is None:
            run.greatest_threadrun_number = number = 0
        else:
            run.greatest_threadrun_number += 1
            number = run.greatest_threadrun_number
            wf.thread(parent).child_thread_ids.append(number)
        spec = wf.spec.thread_specs[name]
        thread = run.thread_runs.add(
            wf_spec_id=run.wf_spec_id,
            number=number,
            status=LHStatus.RUNNING,
            thread_spec_name=name,
            current_node_position=0,
            type=kind,
        )
        if parent is not None:
            thread.parent_thread_id = parent
        stamp(thread, "start_time")
        entry = next(n for n, node in spec.nodes.items() if node.WhichOneof("node") == "entrypoint")
        node_run = self._new_node_run(wf, thread, entry)
        node_run.entrypoint.SetInParent()
        for thread_var in spec.variable_defs:
            if thread_var.access_level == WfRunVariableAccessLevel.INHERITED_VAR:
                continue
            var_def = thread_var.var_def
            value = variables.get(var_def.name)
            if (value is None or is_null(value)) and var_def.HasField("default_value"):
                value = var_def.default_value
            wf.variables[(number, var_def.name)] = Variable(
                id=VariableId(wf_run_id=run.id, thread_run_number=number, name=var_def.name),
                value=value if value is not None else VariableValue(),
                wf_spec_id=run.wf_spec_id,
                masked=var_def.masked_value or var_def.type_def.masked,
            )
            stamp(wf.variables[(number, var_def.name)], "created_at")
        node_run.status = LHStatus.RUNNING
        return thread

    def _new_node_run(self, wf: WfRunRecord, thread: ThreadRun, node_name: str) -> NodeRun:
        node_run = NodeRun(
            id=NodeRunId(
                wf_run_id=wf.run.id,
                thread_run_number=thread.number,
                position=thread.current_node_position,
            ),
            wf_spec_id=wf.run.wf_spec_id,
            status=LHStatus.STARTING,
            thread_spec_name=thread.thread_spec_name,
            node_name=node_name,
        )
        stamp(node_run, "arrival_time")
        wf.node_runs[(thread.number, thread.current_node_position)] = node_run
        return node_run

    # ------------------------------------------------------------------ advancing

    def _advance(self, wf: WfRunRecord) -> None:
        """``WfRunModel.advance``: advance every ThreadRun until nothing changes."""
        changed, rounds = True, 0
        while changed:
            rounds += 1
            if rounds > _MAX_ADVANCES:
                raise RuntimeError(f"WfRun {wf.id} does not settle")
            changed = self._start_failure_handlers(wf)
            number = 0
            while number < len(wf.run.thread_runs):  # handlers started here run too
                changed = self._advance_thread(wf, wf.thread(number)) or changed
                number += 1
        self._cond.notify_all()

    def _advance_thread(self, wf: WfRunRecord, thread: ThreadRun) -> bool:
        """``ThreadRunModel.advance``; True when something moved."""
        if thread.status in TERMINATED:
            return False
        if thread.status == LHStatus.HALTED:
            return self._maybe_unhalt(wf, thread)
        if thread.status == LHStatus.HALTING:
            return self._maybe_finish_halting(wf, thread)
        node_run = wf.current_node_run(thread)
        try:
            if node_run.failures:
                return self._advance_past_failure(wf, thread)
            if not self._check_completed(wf, thread, node_run):
                return False
            if node_run.WhichOneof("node_type") == "exit":
                thread.status = LHStatus.COMPLETED
                stamp(thread, "end_time")
                self._thread_status_changed(wf, thread.number, now(), LHStatus.COMPLETED)
            else:
                self._activate_node(wf, thread, self._next_node(wf, thread, node_run))
        except NodeFailure as exn:
            self._respond_to_failure(wf, thread, exn.failure)
        return True

    def _check_completed(self, wf: WfRunRecord, thread: ThreadRun, node_run: NodeRun) -> bool:
        """``NodeRunModel.checkIfProcessingCompleted``."""
        try:
            done = self._sub_node_completed(wf, thread, node_run)
        except NodeFailure as exn:
            node_run.failures.append(exn.failure)
            node_run.status = failure_status(exn.failure.failure_name)
            node_run.error_message = exn.failure.message
            raise
        if done:
            node_run.status = LHStatus.COMPLETED
            stamp(node_run, "end_time")
        return done

    def _sub_node_completed(self, wf: WfRunRecord, thread: ThreadRun, node_run: NodeRun) -> bool:
        kind = node_run.WhichOneof("node_type")
        if kind == "task":
            return self._task_node_completed(node_run)
        if kind == "exit":
            return self._exit_node_completed(wf, thread, node_run)
        return True  # ENTRYPOINT

    def _task_node_completed(self, node_run: NodeRun) -> bool:
        """``TaskNodeRunModel.checkIfProcessingCompleted``."""
        record = self._task_runs[task_key(node_run)]
        if record.indexed_status in STILL_RUNNING:
            return False
        attempt = record.latest
        if attempt.status == TaskStatus.TASK_SUCCESS:
            return True
        raise NodeFailure(_attempt_failure(attempt))

    def _exit_node_completed(self, wf: WfRunRecord, thread: ThreadRun, node_run: NodeRun) -> bool:
        """``ExitRunModel.checkIfProcessingCompleted``."""
        exit_node = self._node(wf, thread, node_run.node_name).exit
        if exit_node.HasField("failure_def"):
            definition = exit_node.failure_def
            failure = Failure(failure_name=definition.failure_name, message=definition.message)
            failure.content.CopyFrom(VariableValue())
            if definition.HasField("content"):
                try:
                    failure.content.CopyFrom(self._assign(wf, thread, definition.content))
                except VarSubError as exn:
                    failure.message += f"\n\nWARNING: Unable to assign output content: {exn}"
            raise NodeFailure(failure)
        failed = ""
        for child_id in thread.child_thread_ids:
            child = wf.thread(child_id)
            if child.status not in TERMINATED and child.status != LHStatus.HALTED:
                return False
            ok = child.status in (LHStatus.COMPLETED, LHStatus.HALTED)
            if not ok and child_id not in thread.handled_failed_children:
                failed += f" {child_id}"
        if failed:
            raise NodeFailure(
                Failure(
                    failure_name="CHILD_FAILURE",
                    message=f"Child thread (or threads) failed:{failed}",
                )
            )
        if exit_node.HasField("return_content"):
            try:
                thread.output.CopyFrom(self._assign(wf, thread, exit_node.return_content))
            except VarSubError as exn:
                raise NodeFailure(
                    Failure(
                        failure_name="VAR_ERROR",
                        message=f"Failed calculating threadRun output: {exn}",
                    )
                ) from exn
        return True

    def _activate_node(self, wf: WfRunRecord, thread: ThreadRun, node_name: str) -> None:
        """``ThreadRunModel.activateNode`` + ``NodeRunModel.arrive``."""
        thread.current_node_position += 1
        node = self._node(wf, thread, node_name)
        node_run = self._new_node_run(wf, thread, node_name)
        kind = node.WhichOneof("node")
        if kind == "task":
            node_run.task.SetInParent()
        elif kind == "exit":
            node_run.exit.SetInParent()
        node_run.status = LHStatus.RUNNING
        if kind != "task":
            return
        try:
            self._create_task_run(wf, thread, node_run)
        except NodeFailure as exn:
            node_run.failures.append(exn.failure)
            node_run.status = failure_status(exn.failure.failure_name)
            raise

    def _create_task_run(self, wf: WfRunRecord, thread: ThreadRun, node_run: NodeRun) -> None:
        """``TaskNodeRunModel.arrive``: a TaskRun with its first attempt, queued at once."""
        task_node = self._node(wf, thread, node_run.node_name).task
        task_def = self._task_def(task_node.task_def_id.name)
        if task_def is None:
            raise NodeFailure(
                Failure(failure_name="TASK_ERROR", message="Appears that TaskDef was deleted!")
            )
        inputs = []
        try:
            if len(task_def.input_vars) != len(task_node.variables):
                raise VarSubError(
                    "Impossible: got different number of taskdef vars and node input vars"
                )
            for var_def, assignment in zip(task_def.input_vars, task_node.variables, strict=True):
                value = self._assign(wf, thread, assignment)
                problem = incompatibility(type_def_of(var_def), value)
                if problem is not None:
                    raise VarSubError(f"Variable {var_def.name} invalid: {problem}")
                inputs.append(
                    VarNameAndVal(
                        var_name=var_def.name,
                        value=cast(value, type_def_of(var_def)),
                        masked=var_def.type_def.masked,
                    )
                )
        except VarSubError as exn:
            raise NodeFailure(
                Failure(
                    failure_name="VAR_SUB_ERROR",
                    message=f"Failed calculating TaskRun Input Vars: {exn}",
                )
            ) from exn
        timeout_s = task_node.timeout_seconds or DEFAULT_TASK_TIMEOUT_S
        run = TaskRun(
            id=TaskRunId(
                wf_run_id=wf.run.id, task_guid=f"{thread.number}-{thread.current_node_position}"
            ),
            task_def_id=TaskDefId(name=task_def.id.name),
            input_variables=inputs,
            # The 1.2.1 server leaves TaskRunSource.wf_spec_id unset.
            source=TaskRunSource(task_node=TaskNodeReference(node_run_id=node_run.id)),
            timeout_seconds=timeout_s,
            total_attempts=1 + task_node.retries,
        )
        if task_node.HasField("exponential_backoff"):
            run.exponential_backoff.CopyFrom(task_node.exponential_backoff)
        stamp(run, "scheduled_at")
        record = TaskRunRecord(run, wf.id, float(timeout_s), TaskStatus.TASK_SCHEDULED)
        record.add_attempt(TaskAttempt(status=TaskStatus.TASK_PENDING))
        self._task_runs[record.key] = record
        self.checkpoints.pop(record.key, None)
        node_run.task.task_run_id.CopyFrom(run.id)
        self._dispatch(record)

    def _next_node(self, wf: WfRunRecord, thread: ThreadRun, node_run: NodeRun) -> str:
        """``evaluateOutgoingEdgesAndMaybeMutateVariables`` (no mutations after a failure)."""
        for edge in self._node(wf, thread, node_run.node_name).outgoing_edges:
            try:
                if not node_run.failures:
                    for mutation in edge.variable_mutations:
                        self._mutate(wf, thread, node_run, mutation)
                return str(edge.sink_node_name)
            except VarSubError as exn:
                failure = Failure(
                    failure_name="VAR_SUB_ERROR",
                    message=f"Failed evaluating edge with sink node {edge.sink_node_name}: {exn}",
                )
                node_run.failures.append(failure)
                raise NodeFailure(failure) from exn
        failure = Failure(
            failure_name="VAR_SUB_ERROR",
            message=f"Invalid WfSpec: No outgoing edges found on Node {node_run.node_name} "
            "with all conditions satisfied",
        )
        node_run.failures.append(failure)
        raise NodeFailure(failure)

    # ------------------------------------------------------------------ failures

    def _respond_to_failure(self, wf: WfRunRecord, thread: ThreadRun, failure: Failure) -> None:
        """``respondToNodeFailure``: start the matching handler, or fail the ThreadRun."""
        node_run = wf.current_node_run(thread)
        node = self._node(wf, thread, node_run.node_name)
        handler = next((h for h in node.failure_handlers if handles(h, failure.failure_name)), None)
        if handler is None:
            self._halt_children(wf, thread)
            node_run.status = failure_status(failure.failure_name)
            # The server passes the ThreadRun's own (unset) end time here.
            self._fail_without_grace(wf, thread, failure, None)
            return
        wf.run.pending_failures.append(
            PendingFailureHandler(
                failed_thread_run=thread.number, handler_spec_name=handler.handler_spec_name
            )
        )
        reason = ThreadHaltReason()
        reason.pending_failure.node_run_position = thread.current_node_position
        self._halt(wf, thread, reason)

    def _fail_without_grace(
        self, wf: WfRunRecord, thread: ThreadRun, failure: Failure, when: datetime | None
    ) -> None:
        """``failWithoutGrace``: the ThreadRun fails; a failing handler fails its parent too."""
        thread.error_message = failure.message
        thread.status = failure_status(failure.failure_name)
        if when is None:
            thread.ClearField("end_time")
        else:
            stamp(thread, "end_time", when)
        if thread.HasField("failure_being_handled"):
            self._fail_without_grace(wf, wf.thread(thread.parent_thread_id), failure, when)
        self._thread_status_changed(wf, thread.number, now(), thread.status)

    def _thread_status_changed(
        self, wf: WfRunRecord, number: int, when: datetime, status: LHStatus
    ) -> None:
        """``WfRunModel.handleThreadStatus``: the WfRun follows its entrypoint ThreadRun."""
        if number != 0:
            return
        if status in TERMINATED:
            stamp(wf.run, "end_time", when)
        wf.run.status = status

    def _start_failure_handlers(self, wf: WfRunRecord) -> bool:
        """``WfRunModel.startXnHandlers``: once a failed ThreadRun is HALTED, run its handler."""
        changed = False
        pending = wf.run.pending_failures
        for index in reversed(range(len(pending))):
            failed = wf.thread(pending[index].failed_thread_run)
            if not self._maybe_finish_halting(wf, failed):
                continue
            changed = True
            handler_name = pending[index].handler_spec_name
            del pending[index]
            node_run = wf.current_node_run(failed)
            variables = {}
            if wf.spec.thread_specs[handler_name].variable_defs:
                variables["INPUT"] = node_run.failures[-1].content
            handler = self._start_thread(
                wf, handler_name, failed.number, variables, ThreadType.FAILURE_HANDLER
            )
            node_run.failure_handler_ids.append(handler.number)
            handler.failure_being_handled.CopyFrom(
                FailureBeingHandled(
                    thread_run_number=failed.number,
                    node_run_position=failed.current_node_position,
                    failure_number=len(node_run.failures) - 1,
                )
            )
            node_run.failures[-1].failure_handler_threadrun_id = handler.number
            # acknowledgeXnHandlerStarted: PENDING_FAILURE becomes HANDLING_FAILURE and
            # the handler is listed among the children (a second time, as on the server).
            keep_halt_reasons(failed, lambda r: r.WhichOneof("reason") != "pending_failure")
            failed.halt_reasons.add(
                handling_failure=HandlingFailureHaltReason(handler_thread_id=handler.number)
            )
            failed.child_thread_ids.append(handler.number)
        return changed

    def _advance_past_failure(self, wf: WfRunRecord, thread: ThreadRun) -> bool:
        """``maybeAdvanceFromFailedNodeRun``: go on once the handler COMPLETED."""
        node_run = wf.current_node_run(thread)
        failure = node_run.failures[-1]
        node_run.status = failure_status(failure.failure_name)
        if not failure.HasField("failure_handler_threadrun_id"):
            return False
        if wf.thread(failure.failure_handler_threadrun_id).status != LHStatus.COMPLETED:
            return False
        try:
            self._activate_node(wf, thread, self._next_node(wf, thread, node_run))
        except NodeFailure as exn:
            self._fail_without_grace(wf, thread, exn.failure, now())
        return True


def _attempt_failure(attempt: TaskAttempt) -> Failure:
    """The Failure a failed TaskRun puts on its NodeRun (from its latest attempt)."""
    if attempt.status == TaskStatus.TASK_EXCEPTION:
        failure = Failure(failure_name=attempt.exception.name, message=attempt.exception.message)
        if attempt.exception.HasField("content"):
            failure.content.CopyFrom(attempt.exception.content)
        return failure
    name, message = _TASK_FAILURES[attempt.status]
    return Failure(failure_name=name, message=message)
