"""What the fake stores: the protobuf messages it serves, plus a little bookkeeping."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import grpc
from littlehorse.model import (
    NodeRun,
    PollTaskRequest,
    ScheduledTask,
    TaskAttempt,
    TaskRun,
    TaskRunId,
    ThreadRun,
    Variable,
    WfRun,
    WfSpec,
)

#: (wf_run_id, task_guid), the way the server keys a TaskRun.
TaskRunKey = tuple[str, str]


def key_of(task_run_id: TaskRunId) -> TaskRunKey:
    """The key of the TaskRun an id names."""
    return (task_run_id.wf_run_id.id, task_run_id.task_guid)


@dataclass(eq=False)
class Stream:
    """One open PollTask stream."""

    context: grpc.ServicerContext
    client_id: str = ""
    worker_version: str = ""
    dead: bool = False
    #: Set by kill_streams()/stop(): end the stream with UNAVAILABLE and this message.
    kill: str | None = None
    #: PollTaskRequests read by the stream's reader thread, not yet answered.
    requests: collections.deque[PollTaskRequest] = field(default_factory=collections.deque)
    client_done: bool = False
    #: A task taken from the queue for this stream but not yet sent.
    in_flight: ScheduledTask | None = None


@dataclass(eq=False)
class TaskRunRecord:
    """A TaskRun: the proto GetTaskRun serves, and what the server keeps beside it."""

    run: TaskRun
    #: Id of the WfRun whose TASK node created it; None for ``schedule()``d tasks.
    owner: str | None
    #: Per-attempt timeout in server seconds; None never times out (bare tasks by default).
    timeout_s: float | None
    #: The server's own ``TaskRunModel.status`` field, which feeds the search index and
    #: lags the proto's status (always the latest attempt's) during retries.
    indexed_status: int
    #: Per attempt, bumped when a claim is undone so its pending timeout timers go stale.
    epochs: list[int] = field(default_factory=list)

    @property
    def key(self) -> TaskRunKey:
        """(wf_run_id, task_guid)."""
        return key_of(self.run.id)

    @property
    def latest(self) -> TaskAttempt:
        """The latest attempt, the one that decides the TaskRun's status."""
        attempt: TaskAttempt = self.run.attempts[-1]
        return attempt

    def add_attempt(self, attempt: TaskAttempt) -> None:
        """Append an attempt (the new latest one)."""
        self.run.attempts.append(attempt)
        self.epochs.append(0)
        self.sync_status()

    def sync_status(self) -> None:
        """The TaskRun's status is always its latest attempt's (``TaskRunModel.getStatus``)."""
        self.run.status = self.latest.status


@dataclass(eq=False)
class WfRunRecord:
    """A WfRun with the NodeRuns, Variables and TaskRuns the server stores beside it."""

    run: WfRun
    #: The WfSpec revision this WfRun runs (a later PutWfSpec does not change it).
    spec: WfSpec
    node_runs: dict[tuple[int, int], NodeRun] = field(default_factory=dict)
    variables: dict[tuple[int, str], Variable] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """The WfRun's id."""
        wf_run_id: str = self.run.id.id
        return wf_run_id

    def thread(self, number: int) -> ThreadRun:
        """ThreadRun ``number`` (the fake never archives ThreadRuns)."""
        thread: ThreadRun = self.run.thread_runs[number]
        return thread

    def current_node_run(self, thread: ThreadRun) -> NodeRun:
        """The NodeRun at the ThreadRun's current position."""
        return self.node_runs[(thread.number, thread.current_node_position)]
