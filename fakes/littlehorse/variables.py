"""Variables of a WfRun: lookups through parent ThreadRuns, assignments, ASSIGN mutations."""

# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

from littlehorse.model import (
    LHStatus,
    NodeRun,
    ThreadRun,
    Variable,
    VariableAssignment,
    VariableValue,
)

from fakes.littlehorse.records import WfRunRecord
from fakes.littlehorse.shapes import VarSubError, task_key
from fakes.littlehorse.taskruns import TaskRuns
from fakes.littlehorse.values import cast, incompatibility, type_def_of


class WfVariables(TaskRuns):
    """``ThreadRunModel.getVariable`` / ``assignVariable`` / ``mutateVariable``, in short."""

    def _node(self, wf: WfRunRecord, thread: ThreadRun, node_name: str):
        return wf.spec.thread_specs[thread.thread_spec_name].nodes[node_name]

    def _variable(self, wf: WfRunRecord, thread: ThreadRun, name: str) -> Variable | None:
        """``ThreadRunModel.getVariable``: this ThreadRun's, else its parents'."""
        current: ThreadRun | None = thread
        while current is not None:
            found = wf.variables.get((current.number, name))
            if found is not None:
                return found
            current = (
                wf.thread(current.parent_thread_id)
                if current.HasField("parent_thread_id")
                else None
            )
        return None

    def _assign(
        self, wf: WfRunRecord, thread: ThreadRun, assignment: VariableAssignment
    ) -> VariableValue:
        """``assignVariable`` for a variable, a literal or a node's output."""
        source = assignment.WhichOneof("source")
        if source == "literal_value":
            return assignment.literal_value
        if source == "variable_name":
            variable = self._variable(wf, thread, assignment.variable_name)
            if variable is None:
                raise VarSubError(f"Variable {assignment.variable_name} not in scope!")
            return variable.value
        if source == "node_output":
            name = assignment.node_output.node_name
            for position in range(thread.current_node_position, 0, -1):
                node_run = wf.node_runs[(thread.number, position)]
                if node_run.node_name == name:
                    output = self._node_output(node_run)
                    if output is None:
                        break
                    return output
            raise VarSubError(f"Specified node {name} has no output.")
        raise VarSubError(f"the fake cannot assign from {source}")

    def _node_output(self, node_run: NodeRun) -> VariableValue | None:
        if node_run.WhichOneof("node_type") != "task" or node_run.status != LHStatus.COMPLETED:
            return None
        attempt = self._task_runs[task_key(node_run)].latest
        return attempt.output if attempt.HasField("output") else VariableValue()

    def _mutate(self, wf: WfRunRecord, thread: ThreadRun, node_run: NodeRun, mutation) -> None:
        """An ASSIGN variable mutation on an outgoing edge."""
        rhs = mutation.WhichOneof("rhs_value")
        if rhs == "rhs_assignment":
            value = self._assign(wf, thread, mutation.rhs_assignment)
        elif rhs == "literal_value":
            value = mutation.literal_value
        else:
            output = self._node_output(node_run)
            value = output if output is not None else VariableValue()
        variable = self._variable(wf, thread, mutation.lhs_name)
        if variable is None:
            raise VarSubError(f"Tried to save out-of-scope var {mutation.lhs_name}")
        owner = wf.spec.thread_specs[wf.thread(variable.id.thread_run_number).thread_spec_name]
        var_def = next(
            d.var_def for d in owner.variable_defs if d.var_def.name == mutation.lhs_name
        )
        problem = incompatibility(type_def_of(var_def), value)
        if problem is not None:
            raise VarSubError(f"Cannot assign to {mutation.lhs_name}: {problem}")
        variable.value.CopyFrom(cast(value, type_def_of(var_def)))
