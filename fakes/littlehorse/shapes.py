"""What the WfRun engine shares: the WfSpec shapes it runs, failure matching, statuses."""

# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

from datetime import datetime

from littlehorse.model import (
    Failure,
    FailureHandlerDef,
    LHStatus,
    NodeRun,
    VariableMutationType,
    WfSpec,
)

from fakes.littlehorse.core import now
from fakes.littlehorse.records import TaskRunKey, key_of
from fakes.littlehorse.values import RESERVED_FAILURES, enum_name

DEFAULT_TASK_TIMEOUT_S = 60  # LHConstants.DEFAULT_TASK_TIMEOUT_SECONDS
TERMINATED = frozenset({LHStatus.COMPLETED, LHStatus.ERROR, LHStatus.EXCEPTION})
IN_PROGRESS = frozenset({LHStatus.STARTING, LHStatus.RUNNING, LHStatus.HALTING})
TRANSITIONING_HALTS = frozenset({"handling_failure", "pending_failure", "pending_interrupt"})
_SUPPORTED_NODES = frozenset({"entrypoint", "exit", "task"})
_SUPPORTED_SOURCES = frozenset({"variable_name", "literal_value", "node_output"})


class NodeFailure(Exception):
    """``NodeFailureException``: a NodeRun failed with this Failure."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


class VarSubError(Exception):
    """``LHVarSubError``: a variable assignment or mutation could not be computed."""


def unsupported(spec: WfSpec) -> str | None:
    """Why the fake cannot run this WfSpec, naming the thread, node and feature; or None."""
    for thread_name, thread in spec.thread_specs.items():
        where = f"WfSpec {spec.id.name!r} thread {thread_name!r}"
        if thread.interrupt_defs:
            return f"{where} has interrupt_defs, which the fake LittleHorse cannot run"
        for node_name, node in thread.nodes.items():
            kind = node.WhichOneof("node")
            at = f"{where} node {node_name!r}"
            if kind not in _SUPPORTED_NODES:
                return f"{at} is of type {str(kind).upper()}, which the fake LittleHorse cannot run"
            if kind == "task" and node.task.WhichOneof("task_to_execute") != "task_def_id":
                return f"{at} is a dynamic TASK, which the fake LittleHorse cannot run"
            assignments = list(node.task.variables) if kind == "task" else []
            if kind == "exit" and node.exit.HasField("return_content"):
                assignments.append(node.exit.return_content)
            if kind == "exit" and node.exit.failure_def.HasField("content"):
                assignments.append(node.exit.failure_def.content)
            for edge in node.outgoing_edges:
                if edge.WhichOneof("edge_condition") is not None:
                    return f"{at} has a conditional edge, which the fake LittleHorse cannot run"
                for mutation in edge.variable_mutations:
                    if mutation.operation != VariableMutationType.ASSIGN:
                        op = enum_name(VariableMutationType, mutation.operation)
                        return f"{at} mutates {mutation.lhs_name!r} with {op}; the fake only runs ASSIGN"
                    if mutation.HasField("lhs_json_path") or mutation.HasField("lhs_lh_path"):
                        return f"{at} mutates a path inside {mutation.lhs_name!r}, which the fake cannot"
                    rhs = mutation.WhichOneof("rhs_value")
                    if rhs == "rhs_assignment":
                        assignments.append(mutation.rhs_assignment)
                    elif rhs == "node_output" and mutation.node_output.ListFields():
                        return (
                            f"{at} mutates {mutation.lhs_name!r} with a path into the node output"
                        )
            for assignment in assignments:
                source = assignment.WhichOneof("source")
                if source not in _SUPPORTED_SOURCES:
                    return f"{at} assigns a value from {source}, which the fake LittleHorse cannot"
                if assignment.WhichOneof("path") is not None or assignment.HasField("target_type"):
                    return f"{at} assigns a value through a path or cast, which the fake cannot"
    return None


def handles(handler: FailureHandlerDef, failure_name: str) -> bool:
    """``FailureHandlerDefModel.doesHandle``; TASK_ERROR catches TASK_FAILURE and TIMEOUT."""
    case = handler.WhichOneof("failure_to_catch")
    if case is None:
        return True
    if case == "any_failure_of_type":
        reserved = failure_name in RESERVED_FAILURES
        return (
            reserved
            if handler.any_failure_of_type == FailureHandlerDef.FAILURE_TYPE_ERROR
            else not reserved
        )
    specific = handler.specific_failure
    if specific == failure_name:
        return True
    if specific == "VAR_ERROR":
        return failure_name in ("VAR_MUTATION_ERROR", "VAR_SUB_ERROR")
    if specific == "TASK_ERROR":
        return failure_name in ("TASK_FAILURE", "TIMEOUT")
    return False


def stamp(message, field: str, when: datetime | None = None) -> None:
    """Set a Timestamp field to ``when`` (default: now)."""
    getattr(message, field).FromDatetime(when or now())


def task_key(node_run: NodeRun) -> TaskRunKey:
    """The key of a TASK NodeRun's TaskRun."""
    return key_of(node_run.task.task_run_id)
