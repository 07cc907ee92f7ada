"""Read RPCs: Get*/List*/Search* for WfRuns, NodeRuns, TaskRuns and Variables.

Like the server, a missing object is NOT_FOUND "Requested object was not found.",
reads show masked values as ``*****``, lists are ordered by object id (as text:
``wf/0/10`` sorts before ``wf/0/2``), searches by creation time, ``limit`` defaults
to 100 (an explicit 0 returns nothing), and a ``bookmark`` is returned only when more
results remain. The fake's bookmark is a prefix plus the last returned key; it is
opaque to clients either way.
"""

# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import grpc
from littlehorse.model import (
    ListNodeRunsRequest,
    ListTaskRunsRequest,
    ListVariablesRequest,
    NodeRun,
    NodeRunId,
    NodeRunList,
    SearchTaskRunRequest,
    SearchWfRunRequest,
    TaskRun,
    TaskRunId,
    TaskRunIdList,
    TaskRunList,
    Variable,
    VariableId,
    VariableList,
    VariableValue,
    WfRun,
    WfRunId,
    WfRunIdList,
)

from fakes.littlehorse.core import NOT_FOUND_MESSAGE, ApiError, FakeCore, abort, copied
from fakes.littlehorse.records import TaskRunRecord, WfRunRecord, key_of
from fakes.littlehorse.values import MASK, compact_values

_T = TypeVar("_T")
DEFAULT_LIMIT = 100  # PublicScanRequest.getLimit()
_INVALID = grpc.StatusCode.INVALID_ARGUMENT
_BOOKMARK = b"fake-lh:"  # + the last key returned ("" before the first)


def _page(
    items: list[tuple[str, _T]], request, *, search: bool = False
) -> tuple[list[_T], bytes | None]:
    """Sorted ``(key, item)`` pairs -> one page after the request's bookmark, and the next.

    As on the server an explicit ``limit`` is taken as given: 0 returns no results (and
    a bookmark if anything matched); a negative one is treated as 0 by lists and makes
    searches fail INTERNAL (the server's all-partition tag scan trips over it).
    """
    limit = request.limit if request.HasField("limit") else DEFAULT_LIMIT
    if limit < 0:
        if search:
            raise ApiError(grpc.StatusCode.INTERNAL, "Unexpected internal failure: WTF?")
        limit = 0
    after = None
    if request.bookmark.startswith(_BOOKMARK):
        after = request.bookmark[len(_BOOKMARK) :].decode()
    rest = [
        item for item in sorted(items, key=lambda kv: kv[0]) if after is None or item[0] > after
    ]
    page = rest[:limit]
    if len(rest) <= limit:
        return [item for _, item in page], None
    last = page[-1][0] if page else (after or "")
    return [item for _, item in page], _BOOKMARK + last.encode()


def _created_key(timestamp, *ids: object) -> str:
    return "/".join([f"{timestamp.ToNanoseconds():020d}", *map(str, ids)])


def _millis(timestamp) -> int:
    """A Timestamp as the server reads a request's: a ``java.util.Date`` (milliseconds)."""
    return int(timestamp.ToNanoseconds()) // 1_000_000


def _in_window(timestamp, request) -> bool:
    millis = _millis(timestamp)
    if request.HasField("earliest_start") and millis < _millis(request.earliest_start):
        return False
    return not (request.HasField("latest_start") and millis > _millis(request.latest_start))


def masked_task_run(record: TaskRunRecord) -> TaskRun:
    """The TaskRun as a read shows it: masked inputs and outputs replaced by ``*****``."""
    run = copied(record.run)
    for variable in run.input_variables:
        if variable.masked:
            variable.value.CopyFrom(VariableValue(str=MASK))
    for attempt in run.attempts:
        if attempt.masked_value and attempt.HasField("output"):
            attempt.output.CopyFrom(VariableValue(str=MASK))
    return run


def masked_variable(variable: Variable) -> Variable:
    """The Variable as a read shows it."""
    copy = copied(variable)
    if copy.masked:
        copy.value.CopyFrom(VariableValue(str=MASK))
    return copy


class ReadRpcs(FakeCore):
    """Gets, lists and searches."""

    def _read(self, context: grpc.ServicerContext, find: Callable[[], _T | None]) -> _T:
        try:
            with self._cond:
                found = find()
        except ApiError as error:
            abort(context, error.code, error.details)
        if found is None:
            abort(context, grpc.StatusCode.NOT_FOUND, NOT_FOUND_MESSAGE)
        return found

    # ------------------------------------------------------------------ gets

    def GetWfRun(self, request: WfRunId, context: grpc.ServicerContext) -> WfRun:
        """The WfRun, or NOT_FOUND."""

        def find() -> WfRun | None:
            record = self._wf_runs.get(request.id)
            return None if record is None else copied(record.run)

        return self._read(context, find)

    def GetNodeRun(self, request: NodeRunId, context: grpc.ServicerContext) -> NodeRun:
        """The NodeRun, or NOT_FOUND."""

        def find() -> NodeRun | None:
            record = self._wf_runs.get(request.wf_run_id.id)
            node_run = None
            if record is not None:
                node_run = record.node_runs.get((request.thread_run_number, request.position))
            return None if node_run is None else copied(node_run)

        return self._read(context, find)

    def GetTaskRun(self, request: TaskRunId, context: grpc.ServicerContext) -> TaskRun:
        """The TaskRun (of a WfRun or a ``schedule()``d one), or NOT_FOUND."""

        def find() -> TaskRun | None:
            record = self._task_runs.get(key_of(request))
            return None if record is None else masked_task_run(record)

        return self._read(context, find)

    def GetVariable(self, request: VariableId, context: grpc.ServicerContext) -> Variable:
        """The Variable, or NOT_FOUND."""

        def find() -> Variable | None:
            record = self._wf_runs.get(request.wf_run_id.id)
            variable = None
            if record is not None:
                variable = record.variables.get((request.thread_run_number, request.name))
            return None if variable is None else masked_variable(variable)

        return self._read(context, find)

    # ------------------------------------------------------------------ lists

    def ListNodeRuns(
        self, request: ListNodeRunsRequest, context: grpc.ServicerContext
    ) -> NodeRunList:
        """The WfRun's NodeRuns (of one ThreadRun, if given); an unknown WfRun lists nothing."""
        with self._cond:
            record = self._wf_runs.get(request.wf_run_id.id)
            items = []
            for (thread, position), node_run in record.node_runs.items() if record else []:
                if request.HasField("thread_run_number") and thread != request.thread_run_number:
                    continue
                items.append((f"{thread}/{position}", copied(node_run)))
        results, bookmark = _page(items, request)
        return NodeRunList(results=results, bookmark=bookmark)

    def ListTaskRuns(
        self, request: ListTaskRunsRequest, context: grpc.ServicerContext
    ) -> TaskRunList:
        """Every TaskRun whose id carries that WfRun id (``schedule()``d ones too)."""
        with self._cond:
            items = [
                (key[1], masked_task_run(record))
                for key, record in self._task_runs.items()
                if key[0] == request.wf_run_id.id
            ]
        results, bookmark = _page(items, request)
        return TaskRunList(results=results, bookmark=bookmark)

    def ListVariables(
        self, request: ListVariablesRequest, context: grpc.ServicerContext
    ) -> VariableList:
        """The WfRun's Variables, every ThreadRun's."""
        with self._cond:
            record = self._wf_runs.get(request.wf_run_id.id)
            items = [
                (f"{thread}/{name}", masked_variable(variable))
                for (thread, name), variable in (record.variables.items() if record else [])
            ]
        results, bookmark = _page(items, request)
        return VariableList(results=results, bookmark=bookmark)

    # ------------------------------------------------------------------ searches

    def SearchWfRun(
        self, request: SearchWfRunRequest, context: grpc.ServicerContext
    ) -> WfRunIdList:
        """WfRun ids by WfSpec (name, version), status, start time and variables.

        As on the server 1.2.1, nothing matches without a ``wf_spec_name`` (WfRuns are
        indexed only together with their WfSpec), and a variable filter is applied to
        every WfRun found, whether the variable is ``searchable`` or not.
        """
        try:
            with self._cond:
                items = [
                    (_created_key(record.run.start_time, record.id), WfRunId(id=record.id))
                    for record in self._search_wf_runs(request)
                ]
            results, bookmark = _page(items, request, search=True)
        except ApiError as error:
            abort(context, error.code, error.details)
        return WfRunIdList(results=results, bookmark=bookmark)

    def SearchTaskRun(
        self, request: SearchTaskRunRequest, context: grpc.ServicerContext
    ) -> TaskRunIdList:
        """TaskRun ids by TaskDef name, status and scheduled time.

        The status matched is the server's indexed one, which stays TASK_RUNNING while a
        failed attempt waits for its retry (the TaskRun itself then shows TASK_PENDING).
        """
        with self._cond:
            items = []
            for record in self._task_runs.values():
                run = record.run
                if run.task_def_id.name != request.task_def_name:
                    continue
                if request.HasField("status") and record.indexed_status != request.status:
                    continue
                if not _in_window(run.scheduled_at, request):
                    continue
                task_run_id = TaskRunId()
                task_run_id.CopyFrom(run.id)
                items.append((_created_key(run.scheduled_at, *record.key), task_run_id))
        try:
            results, bookmark = _page(items, request, search=True)
        except ApiError as error:
            abort(context, error.code, error.details)
        return TaskRunIdList(results=results, bookmark=bookmark)

    def _search_wf_runs(self, request: SearchWfRunRequest) -> list[WfRunRecord]:
        """``SearchWfRunRequestModel``'s checks and filters (caller holds the lock)."""
        name = request.wf_spec_name
        has_major = request.HasField("wf_spec_major_version")
        has_revision = request.HasField("wf_spec_revision")
        if not name and (has_major or has_revision):
            raise ApiError(
                _INVALID, "Cannot provide wfSpecMajorVersion or wfSpecRevision without wfSpecName"
            )
        if has_revision and not has_major:
            raise ApiError(_INVALID, "Cannot provide wfSpecRevision without wfSpecMajorVersion")
        if request.HasField("parent_wf_run_id"):
            return []  # the fake runs no child WfRuns
        if not name:
            if request.variable_filters:
                raise ApiError(_INVALID, "Cannot filter by variables without specifying wfSpecName")
            return []  # no index without the WfSpec: status, times alone or nothing at all
        major = request.wf_spec_major_version if has_major else None
        revision = request.wf_spec_revision if has_revision else None
        spec = self._find_wf_spec(name, major, revision)
        if spec is None:
            raise ApiError(
                _INVALID, f"Couldn't find wfSpec {name} {_java(major)} {_java(revision)}"
            )
        entry = spec.thread_specs[spec.entrypoint_thread_name]
        var_defs = {d.var_def.name for d in entry.variable_defs}
        for match in request.variable_filters:
            if match.var_name not in var_defs:
                raise ApiError(
                    _INVALID,
                    f"Variable {match.var_name} not present in main thread of workflow {name}",
                )
        wanted = [(m.var_name, compact_values(copied(m.value))) for m in request.variable_filters]

        def matches(record: WfRunRecord) -> bool:
            spec_id = record.run.wf_spec_id
            if spec_id.name != name or (has_major and spec_id.major_version != major):
                return False
            if has_revision and spec_id.revision != revision:
                return False
            if request.HasField("status") and record.run.status != request.status:
                return False
            if not _in_window(record.run.start_time, request):
                return False
            for var_name, value in wanted:  # ScanFilterModel: the stored value, compared as is
                variable = record.variables.get((0, var_name))
                if variable is None or variable.value != value:
                    return False
            return True

        return [r for r in self._wf_runs.values() if matches(r)]


def _java(number: int | None) -> str:
    """An ``Integer`` as Java's ``%d`` formats it: ``null`` for None."""
    return "null" if number is None else str(number)
