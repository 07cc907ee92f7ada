"""Jobs on LittleHorse: submit, read, list, retry and cancel WfRuns of comfyui-generate.

LittleHorse is the only store: a job is a WfRun, read back through the API each time.
A caller-chosen id makes a submission idempotent (LittleHorse refuses a second WfRun
with the same id; the same input again is reported as the existing job). Lists come
from SearchWfRun, newest first; a finished job never changes, so it is cached.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from littlehorse import to_variable_value
from littlehorse.model import (
    CheckpointId,
    GetLatestWfSpecRequest,
    LHStatus,
    ListNodeRunsRequest,
    ListTaskRunsRequest,
    ListVariablesRequest,
    RunWfRequest,
    SearchWfRunRequest,
    StopWfRunRequest,
    TaskRun,
    TaskStatus,
    VariableMatch,
    WfRun,
    WfRunId,
)
from pydantic import BaseModel, ConfigDict

from comfyui_worker.bounds import json_size
from comfyui_worker.errors import InvalidWorkflowError, LittleHorseError, NotFoundError
from comfyui_worker.jobs.model import ACTIVE, Job, JobInput, JobStatus
from comfyui_worker.jobs.read import (
    TERMINAL,
    build_job,
    entry_values,
    prompt_mark,
    value_of,
)
from comfyui_worker.lh.api import LittleHorse
from comfyui_worker.lh.wfspec import RETRY_OF_VAR, WF_SPEC_NAME, WORKFLOW_VAR

MAX_INPUT_BYTES = 900_000  # LittleHorse rejects a record over ~1 MB; the TaskRun repeats it
SEARCH_PAGE = 100
MAX_SCANNED_IDS = 10_000
READS_PER_MATCH = 5  # a list reads at most limit x this many jobs per LittleHorse status
CACHE_SIZE = 2_000
MAX_RETRIES_LISTED = 50

# Which WfRun statuses to search for each job status (a cancelled job's WfRun stays RUNNING).
SEARCHED: dict[JobStatus, tuple[Any, ...]] = {
    JobStatus.QUEUED: (LHStatus.RUNNING,),
    JobStatus.WAITING: (LHStatus.RUNNING,),
    JobStatus.RUNNING: (LHStatus.RUNNING,),
    JobStatus.CANCELLING: (LHStatus.RUNNING, LHStatus.HALTING),
    JobStatus.CANCELLED: (LHStatus.RUNNING, LHStatus.HALTED),
    JobStatus.COMPLETED: (LHStatus.COMPLETED,),
    JobStatus.FAILED: (LHStatus.EXCEPTION, LHStatus.ERROR),
}


class Submitted(BaseModel):
    """A submission's job id, and whether this call created it."""

    model_config = ConfigDict(frozen=True)

    id: str
    wf_spec: str
    created: bool


class JobQuery(BaseModel):
    """Which jobs a list shows: WfSpecs (lanes), statuses, start time, retries of a job."""

    model_config = ConfigDict(frozen=True)

    wf_specs: tuple[str, ...] = (WF_SPEC_NAME,)
    statuses: frozenset[JobStatus] = frozenset()
    since: datetime | None = None
    limit: int = 20
    retry_of: str | None = None


class Jobs:
    """The job operations, each a few LittleHorse calls (errors mapped in ``lhapi``)."""

    def __init__(self, lh: LittleHorse) -> None:
        self.lh = lh
        self._finished: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._spec_names: dict[str, set[str]] = {}  # WfSpecs of the newest shape, seen once

    # ------------------------------------------------------------------ writing

    def submit(
        self,
        task_input: dict[str, Any],
        *,
        wf_spec: str = WF_SPEC_NAME,
        job_id: str | None = None,
        retry_of: str | None = None,
    ) -> Submitted:
        """Start a job; with ``job_id``, a second call with the same input finds the first."""
        _check_size(task_input)
        variables = {WORKFLOW_VAR: to_variable_value(task_input)}
        if retry_of is not None:
            variables[RETRY_OF_VAR] = to_variable_value(retry_of)
        request = RunWfRequest(wf_spec_name=wf_spec, variables=variables)
        if job_id is not None:
            request.id = job_id
        try:
            run = self.lh.run_wf(request)
        except NotFoundError:
            raise self._unregistered(wf_spec) from None
        if run is not None:
            return Submitted(id=run.id.id, wf_spec=wf_spec, created=True)
        assert job_id is not None  # only a caller-chosen id can be taken
        self._check_same(job_id, wf_spec, task_input, retry_of)
        return Submitted(id=job_id, wf_spec=wf_spec, created=False)

    def retry(self, job_id: str, *, new_id: str | None = None) -> Submitted:
        """A new job with the same input and WfSpec, recorded as a retry of ``job_id``."""
        submitted = self.input_of(job_id)
        wf_spec, task_input = submitted.wf_spec, submitted.task_input
        if RETRY_OF_VAR not in self._spec_variables(wf_spec):
            raise LittleHorseError(
                f"WfSpec {wf_spec} predates retries (no {RETRY_OF_VAR} variable): run "
                "`main.py register` (with --lane for a lane) to update it",
                wf_spec=wf_spec,
            )
        return self.submit(task_input, wf_spec=wf_spec, job_id=new_id, retry_of=job_id)

    def cancel(self, job_id: str) -> Job:
        """StopWfRun; the worker running it then cancels its prompt in ComfyUI."""
        job = self.get(job_id)
        if job.status not in ACTIVE or job.status == JobStatus.CANCELLING:
            return job
        self.lh.call("StopWfRun", StopWfRunRequest(wf_run_id=WfRunId(id=job_id)))
        return self.get(job_id)

    # ------------------------------------------------------------------ reading

    def get(self, job_id: str, *, cached: bool = False) -> Job:
        """One job, read from LittleHorse (a finished one from the cache if ``cached``)."""
        if cached:
            with self._lock:
                hit = self._finished.get(job_id)
            if hit is not None:
                return hit
        wf_run = self._wf_run(job_id)
        run_id = WfRunId(id=job_id)
        task_runs = self.lh.call("ListTaskRuns", ListTaskRunsRequest(wf_run_id=run_id)).results
        job = build_job(
            wf_run,
            self.lh.call("ListNodeRuns", ListNodeRunsRequest(wf_run_id=run_id)).results,
            self.lh.call("ListVariables", ListVariablesRequest(wf_run_id=run_id)).results,
            task_runs,
            submitted_at=self._submitted_at(task_runs),
        )
        if wf_run.status in TERMINAL:
            self._remember(job)
        return job

    def _submitted_at(self, task_runs: list[TaskRun]) -> datetime | None:
        """When a running attempt's prompt began to run, as its checkpoints say, if it has.

        The worker checkpoints each submission just before the POST to ComfyUI, so a
        claimed attempt without one is still waiting for its GPU (with one slot, the
        SDK holds a second claimed task until the first is done). A prefetched prompt
        waits behind the worker's others until its ``started`` record. Newest first.
        """
        for task_run in task_runs:
            if not task_run.attempts or task_run.attempts[-1].status != TaskStatus.TASK_RUNNING:
                continue
            current = len(task_run.attempts) - 1
            for number in reversed(range(task_run.total_checkpoints)):
                checkpoint_id = CheckpointId(task_run=task_run.id, checkpoint_number=number)
                try:
                    checkpoint = self.lh.call("GetCheckpoint", checkpoint_id)
                except NotFoundError:
                    continue
                mark = prompt_mark(value_of(checkpoint.value), current)
                if mark == "waiting":
                    return None
                if mark == "running":
                    stamp: datetime = checkpoint.created_at.ToDatetime(tzinfo=UTC)
                    return stamp
        return None

    def input_of(self, job_id: str) -> JobInput:
        """The job's WfSpec, its task input exactly as submitted, and what it retries."""
        wf_run = self._wf_run(job_id)
        request = ListVariablesRequest(wf_run_id=WfRunId(id=job_id))
        values = entry_values(self.lh.call("ListVariables", request).results)
        task_input = values.get(WORKFLOW_VAR)
        retry_of = values.get(RETRY_OF_VAR)
        return JobInput(
            wf_spec=str(wf_run.wf_spec_id.name),
            task_input=task_input if isinstance(task_input, dict) else {},
            retry_of=retry_of if isinstance(retry_of, str) else None,
        )

    def recent(self, query: JobQuery) -> list[Job]:
        """The newest jobs that match, newest first."""
        found: dict[str, Job] = {}
        for wf_spec in query.wf_specs:
            names = self._spec_variables(wf_spec)
            if query.retry_of is not None and RETRY_OF_VAR not in names:
                continue  # a WfSpec from before retries has none
            for status in _searched(query.statuses):
                ids = self._search(wf_spec, status, query)
                found.update((job.id, job) for job in self._newest(ids, query))
        jobs = sorted(found.values(), key=lambda job: job.created_at, reverse=True)
        return jobs[: query.limit]

    def retries_of(self, job: Job) -> list[str]:
        """Ids of the jobs recorded as retries of ``job``, newest first."""
        if RETRY_OF_VAR not in self._spec_variables(job.wf_spec):
            return []  # a WfSpec from before retries has none
        query = JobQuery(wf_specs=(job.wf_spec,), retry_of=job.id)
        return self._search(job.wf_spec, None, query)[::-1][:MAX_RETRIES_LISTED]

    # ------------------------------------------------------------------ internals

    def _wf_run(self, job_id: str) -> WfRun:
        try:
            run: WfRun = self.lh.call("GetWfRun", WfRunId(id=job_id))
        except NotFoundError:
            raise NotFoundError(
                f"no job {job_id!r} in LittleHorse at {self.lh.address}", job=job_id
            ) from None
        return run

    def _spec_variables(self, wf_spec: str) -> set[str]:
        """The WfSpec's variables; remembered once it has ``retry_of`` (nothing newer exists).

        The page refreshes every few seconds: that is one RPC fewer per lane each time.
        An older WfSpec is asked again, as ``register`` may bring it up to date.
        """
        known = self._spec_names.get(wf_spec)
        if known is not None:
            return known
        try:
            spec = self.lh.call("GetLatestWfSpec", GetLatestWfSpecRequest(name=wf_spec))
        except NotFoundError:
            raise self._unregistered(wf_spec) from None
        thread = spec.thread_specs[spec.entrypoint_thread_name]
        names = {str(v.var_def.name) for v in thread.variable_defs}
        if RETRY_OF_VAR in names:
            self._spec_names[wf_spec] = names
        return names

    def _unregistered(self, wf_spec: str) -> NotFoundError:
        return NotFoundError(
            f"WfSpec {wf_spec} is not registered in LittleHorse at {self.lh.address}: run "
            "`main.py register` (with --lane for a lane)",
            wf_spec=wf_spec,
        )

    def _search(self, wf_spec: str, status: Any, query: JobQuery) -> list[str]:
        """Every matching WfRun id, oldest first (LittleHorse's order)."""
        request = SearchWfRunRequest(wf_spec_name=wf_spec, limit=SEARCH_PAGE)
        if status is not None:
            request.status = status
        if query.since is not None:
            request.earliest_start.FromDatetime(query.since)
        if query.retry_of is not None:
            match = VariableMatch(var_name=RETRY_OF_VAR, value=to_variable_value(query.retry_of))
            request.variable_filters.append(match)
        ids: list[str] = []
        while len(ids) < MAX_SCANNED_IDS:
            page = self.lh.call("SearchWfRun", request)
            ids.extend(str(found.id) for found in page.results)
            if not page.HasField("bookmark"):
                break
            request.bookmark = page.bookmark
        return ids

    def _newest(self, ids: list[str], query: JobQuery) -> Iterator[Job]:
        kept = 0
        for job_id in list(reversed(ids))[: query.limit * READS_PER_MATCH]:
            try:
                job = self.get(job_id, cached=True)
            except NotFoundError:
                continue  # deleted since the search
            if query.statuses and job.status not in query.statuses:
                continue
            yield job
            kept += 1
            if kept >= query.limit:
                return

    def _check_same(
        self, job_id: str, wf_spec: str, task_input: dict[str, Any], retry_of: str | None
    ) -> None:
        """A taken id is fine only for the very same submission."""
        existing = self.input_of(job_id)
        stored = value_of(to_variable_value(task_input))  # as LittleHorse gives it back
        differs = [
            what
            for what, old, new in (
                ("WfSpec", existing.wf_spec, wf_spec),
                ("input", existing.task_input, stored),
                ("retry_of", existing.retry_of, retry_of),
            )
            if old != new
        ]
        if differs:
            raise LittleHorseError(
                f"job {job_id} already exists with a different {' and '.join(differs)}; "
                "choose another --id, or leave it out for a fresh one",
                job=job_id,
                code="ALREADY_EXISTS",
            )

    def _remember(self, job: Job) -> None:
        with self._lock:
            self._finished[job.id] = job
            self._finished.move_to_end(job.id)
            while len(self._finished) > CACHE_SIZE:
                self._finished.popitem(last=False)


def _searched(statuses: frozenset[JobStatus]) -> list[Any]:
    """The WfRun statuses to search (None: one search without a status)."""
    if not statuses:
        return [None]
    return sorted({lh for status in statuses for lh in SEARCHED[status]})


def _check_size(task_input: dict[str, Any]) -> None:
    size = json_size(task_input)
    if size > MAX_INPUT_BYTES:
        raise InvalidWorkflowError(
            f"the task input is {size} bytes; a LittleHorse record holds about 1 MB, so send "
            "large images as path or url sources (docs/task-input.md)",
            size_bytes=size,
        )
