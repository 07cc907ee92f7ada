"""Halting and un-halting ThreadRuns (``ThreadRunModel.halt`` and friends)."""

# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

from collections.abc import Callable

from littlehorse.model import LHStatus, NodeRun, ParentHalted, ThreadHaltReason, ThreadRun

from fakes.littlehorse.records import WfRunRecord
from fakes.littlehorse.shapes import IN_PROGRESS, TERMINATED, TRANSITIONING_HALTS, task_key
from fakes.littlehorse.taskruns import STILL_RUNNING
from fakes.littlehorse.values import failure_status
from fakes.littlehorse.variables import WfVariables


def keep_halt_reasons(thread: ThreadRun, keep: Callable[[ThreadHaltReason], bool]) -> int:
    """Drop the ThreadRun's halt reasons ``keep`` rejects; how many remain."""
    kept = [reason for reason in thread.halt_reasons if keep(reason)]
    if len(kept) != len(thread.halt_reasons):
        del thread.halt_reasons[:]
        thread.halt_reasons.extend(kept)
    return len(kept)


class WfHalting(WfVariables):
    """A ThreadRun goes HALTING, then HALTED once its node and children can stop."""

    def _halt(self, wf: WfRunRecord, thread: ThreadRun, reason: ThreadHaltReason) -> None:
        """``ThreadRunModel.halt``: HALTING now, HALTED once the current node can stop."""
        if thread.status in TERMINATED:
            return
        thread.halt_reasons.append(reason)
        if thread.status != LHStatus.HALTED:
            thread.status = LHStatus.HALTING
        self._halt_children(wf, thread)
        self._maybe_halt_node_run(wf.current_node_run(thread))
        halted = self._maybe_finish_halting(wf, thread)
        if thread.number == 0 and halted and reason.WhichOneof("reason") not in TRANSITIONING_HALTS:
            wf.run.status = LHStatus.HALTED

    def _halt_children(self, wf: WfRunRecord, thread: ThreadRun) -> None:
        """Every child ThreadRun halts too, its reason ``ParentHalted``."""
        for child_id in list(thread.child_thread_ids):
            self._halt(
                wf,
                wf.thread(child_id),
                ThreadHaltReason(parent_halted=ParentHalted(parent_thread_id=thread.number)),
            )

    def _maybe_halt_node_run(self, node_run: NodeRun) -> bool:
        """``NodeRunModel.maybeHalt``: a TASK node halts only once its TaskRun is done.

        An ENTRYPOINT or EXIT node still in progress never does.
        """
        if node_run.status not in IN_PROGRESS:
            return True
        can_halt = False
        if node_run.WhichOneof("node_type") == "task" and node_run.task.HasField("task_run_id"):
            can_halt = self._task_runs[task_key(node_run)].indexed_status not in STILL_RUNNING
        node_run.status = LHStatus.HALTED if can_halt else LHStatus.HALTING
        return can_halt

    def _maybe_finish_halting(self, wf: WfRunRecord, thread: ThreadRun) -> bool:
        """``maybeFinishHaltingProcess``."""
        if thread.status in TERMINATED or thread.status == LHStatus.HALTED:
            return True
        children = [self._maybe_finish_halting(wf, wf.thread(c)) for c in thread.child_thread_ids]
        if self._maybe_halt_node_run(wf.current_node_run(thread)) and all(children):
            thread.status = LHStatus.HALTED
            return True
        return False

    def _maybe_unhalt(self, wf: WfRunRecord, thread: ThreadRun) -> bool:
        """``maybeUnHaltIfAllHaltReasonsResolved``."""
        if keep_halt_reasons(thread, lambda r: not self._halt_reason_resolved(wf, r)):
            return False
        node_run = wf.current_node_run(thread)
        if not node_run.failures:
            thread.status = LHStatus.RUNNING
            node_run.status = LHStatus.RUNNING
        elif node_run.failures[-1].was_properly_handled:
            thread.status = LHStatus.RUNNING
        else:
            thread.status = failure_status(node_run.failures[-1].failure_name)
        return True

    def _halt_reason_resolved(self, wf: WfRunRecord, reason: ThreadHaltReason) -> bool:
        kind = reason.WhichOneof("reason")
        if kind == "handling_failure":
            handler = wf.thread(reason.handling_failure.handler_thread_id)
            handled = handler.failure_being_handled
            if handler.status == LHStatus.COMPLETED:
                node_run = wf.node_runs[(handled.thread_run_number, handled.node_run_position)]
                node_run.failures[-1].was_properly_handled = True
                return True
            return handler.status in (LHStatus.EXCEPTION, LHStatus.ERROR)
        if kind == "parent_halted":
            parent = wf.thread(reason.parent_halted.parent_thread_id)
            return parent.status not in (
                LHStatus.HALTING,
                LHStatus.HALTED,
                LHStatus.EXCEPTION,
                LHStatus.ERROR,
            )
        return False  # MANUAL_HALT and PENDING_FAILURE are removed, never resolved
