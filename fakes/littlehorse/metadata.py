"""TaskDef and WfSpec RPCs: PutTaskDef, GetTaskDef, PutWfSpec, GetWfSpec, GetLatestWfSpec.

A Put is applied at once, but reads (these Gets, RunWf, SearchWfRun and PutWfSpec's
check that its TaskDefs exist) see it only ``metadata_lag_s`` later, as on the server,
which applies writes through Kafka. JSON values inside are stored compactly.
"""

# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import grpc
from littlehorse.model import (
    GetLatestWfSpecRequest,
    MetadataStatus,
    PutTaskDefRequest,
    PutWfSpecRequest,
    TaskDef,
    TaskDefId,
    WfSpec,
    WfSpecId,
)

from fakes.littlehorse.core import FakeCore, abort, now
from fakes.littlehorse.values import compact_values, is_valid_name


def check_name(name: str, context: grpc.ServicerContext) -> None:
    """Abort INVALID_ARGUMENT unless ``name`` is a valid (kebab-case) LittleHorse name."""
    if not is_valid_name(name):
        abort(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Name {name!r} must be a valid hostname (kebab-case)",
        )


class MetadataRpcs(FakeCore):
    """TaskDefs are immutable; a changed WfSpec becomes a new revision (major version 0)."""

    def PutTaskDef(self, request: PutTaskDefRequest, context: grpc.ServicerContext) -> TaskDef:
        """Store a TaskDef; identical re-puts are no-ops, different ones ALREADY_EXISTS."""
        check_name(request.name, context)
        with self._cond:
            existing = self._task_def_requests.get(request.name)
            if existing is None:
                task_def = TaskDef(
                    id=TaskDefId(name=request.name),
                    input_vars=request.input_vars,
                    return_type=request.return_type if request.HasField("return_type") else None,
                    description=request.description,
                )
                task_def.created_at.FromDatetime(now())
                compact_values(task_def)
                self._task_def_requests[request.name] = request
                self.task_defs[request.name] = task_def
                self._task_def_visible_at[request.name] = self._lag_from_now()
                self._cond.notify_all()
                return task_def
            if existing == request:
                return self.task_defs[request.name]
        abort(
            context,
            grpc.StatusCode.ALREADY_EXISTS,
            f"TaskDef {request.name} already exists and is immutable.",
        )

    def GetTaskDef(self, request: TaskDefId, context: grpc.ServicerContext) -> TaskDef:
        """Return the TaskDef or abort NOT_FOUND (also within ``metadata_lag_s`` of its Put)."""
        with self._cond:
            task_def = self._visible_task_def(request.name)
        if task_def is None:
            abort(context, grpc.StatusCode.NOT_FOUND, f"Couldn't find TaskDef {request.name}")
        return task_def

    def PutWfSpec(self, request: PutWfSpecRequest, context: grpc.ServicerContext) -> WfSpec:
        """Store the request; a changed spec becomes a new revision, an identical one is a no-op.

        A TASK node naming a TaskDef that reads cannot see (yet) is INVALID_ARGUMENT,
        as on the server; nothing else is validated.
        """
        check_name(request.name, context)
        with self._cond:
            problem = self._missing_task_def(request)
            if problem is None:
                versions = self._wf_spec_versions.setdefault(request.name, [])
                if not versions or self.wf_specs[request.name] != request:
                    spec = compact_values(_wf_spec(request, len(versions)))
                    versions.append(spec)
                    self._wf_spec_visible_at[(request.name, spec.id.revision)] = (
                        self._lag_from_now()
                    )
                self.wf_specs[request.name] = request
                self._cond.notify_all()
                return versions[-1]
        abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"PutWfSpecRequest is invalid: {problem}")

    def _missing_task_def(self, request: PutWfSpecRequest) -> str | None:
        """``TaskNodeModel.validate``'s first check, for the first TASK node that fails it."""
        names = sorted(request.thread_specs, key=lambda n: n != request.entrypoint_thread_name)
        for thread_name in names:
            nodes = request.thread_specs[thread_name].nodes
            for node_name in sorted(nodes):
                node = nodes[node_name]
                if node.WhichOneof("node") != "task":
                    continue
                if node.task.WhichOneof("task_to_execute") != "task_def_id":
                    continue
                task_def_name = node.task.task_def_id.name
                if self._visible_task_def(task_def_name) is None:
                    return (
                        f"ThreadSpec {thread_name} invalid: Node {node_name} invalid: "
                        f"Refers to nonexistent TaskDef {task_def_name}"
                    )
        return None

    def GetWfSpec(self, request: WfSpecId, context: grpc.ServicerContext) -> WfSpec:
        """Return exactly that WfSpec version (name, major_version, revision) or NOT_FOUND."""
        with self._cond:
            spec = self._find_wf_spec(request.name, request.major_version, request.revision)
        if spec is None:
            abort(context, grpc.StatusCode.NOT_FOUND, "Couldn't find specified WfSpec")
        return spec

    def GetLatestWfSpec(
        self, request: GetLatestWfSpecRequest, context: grpc.ServicerContext
    ) -> WfSpec:
        """Return the newest revision of that WfSpec (of that major version, if given)."""
        major = request.major_version if request.HasField("major_version") else None
        with self._cond:
            spec = self._find_wf_spec(request.name, major, None)
        if spec is None:
            abort(context, grpc.StatusCode.NOT_FOUND, "Couldn't find specified WfSpec")
        return spec


def _wf_spec(request: PutWfSpecRequest, revision: int) -> WfSpec:
    spec = WfSpec(
        id=WfSpecId(name=request.name, major_version=0, revision=revision),
        status=MetadataStatus.ACTIVE,
        entrypoint_thread_name=request.entrypoint_thread_name,
    )
    spec.created_at.FromDatetime(now())
    for thread_name, thread_spec in request.thread_specs.items():
        spec.thread_specs[thread_name].CopyFrom(thread_spec)
    if request.HasField("retention_policy"):
        spec.retention_policy.CopyFrom(request.retention_policy)
    return spec
