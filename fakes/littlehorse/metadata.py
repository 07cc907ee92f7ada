"""TaskDef and WfSpec RPCs: PutTaskDef, GetTaskDef, PutWfSpec, GetWfSpec."""

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
from fakes.littlehorse.values import is_valid_name


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
                self._task_def_requests[request.name] = request
                self.task_defs[request.name] = task_def
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
        """Return the TaskDef or abort NOT_FOUND."""
        with self._cond:
            task_def = self.task_defs.get(request.name)
        if task_def is None:
            abort(context, grpc.StatusCode.NOT_FOUND, f"Couldn't find TaskDef {request.name}")
        return task_def

    def PutWfSpec(self, request: PutWfSpecRequest, context: grpc.ServicerContext) -> WfSpec:
        """Store the request; a changed spec becomes a new revision, an identical one is a no-op."""
        check_name(request.name, context)
        with self._cond:
            versions = self._wf_spec_versions.setdefault(request.name, [])
            if not versions or self.wf_specs[request.name] != request:
                versions.append(_wf_spec(request, len(versions)))
            self.wf_specs[request.name] = request
            self._cond.notify_all()
            return versions[-1]

    def GetWfSpec(self, request: WfSpecId, context: grpc.ServicerContext) -> WfSpec:
        """Return exactly that WfSpec version (name, major_version, revision) or NOT_FOUND."""
        with self._cond:
            spec = self._find_wf_spec(request.name, request.major_version, request.revision)
        if spec is None:
            abort(context, grpc.StatusCode.NOT_FOUND, f"Couldn't find WfSpec {request.name}")
        return spec

    def GetLatestWfSpec(
        self, request: GetLatestWfSpecRequest, context: grpc.ServicerContext
    ) -> WfSpec:
        """Return the newest revision of that WfSpec (of that major version, if given)."""
        major = request.major_version if request.HasField("major_version") else None
        with self._cond:
            spec = self._find_wf_spec(request.name, major, None)
        if spec is None:
            abort(context, grpc.StatusCode.NOT_FOUND, f"Couldn't find WfSpec {request.name}")
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
