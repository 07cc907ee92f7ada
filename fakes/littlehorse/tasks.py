"""Task-worker RPCs (RegisterTaskWorker, PollTask, ReportTask) and the poll queue.

Also the test helpers that queue bare TaskRuns and wait for what workers did.

Each PollTask stream gets a reader thread that moves the worker's PollTaskRequests
into the stream's record, so the handler can always react to ``kill_streams()``
and ``stop()`` with UNAVAILABLE, even while the worker is busy and asks for nothing.
"""

# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
from google.protobuf.empty_pb2 import Empty  # type: ignore[attr-defined]
from littlehorse.model import (
    LHErrorType,
    LHTaskError,
    NodeRunId,
    PollTaskRequest,
    PollTaskResponse,
    RegisterTaskWorkerRequest,
    RegisterTaskWorkerResponse,
    ReportTaskRun,
    ScheduledTask,
    TaskAttempt,
    TaskDef,
    TaskDefId,
    TaskNodeReference,
    TaskRun,
    TaskRunId,
    TaskRunSource,
    TaskStatus,
    VariableValue,
    VarNameAndVal,
    WfRunId,
)
from littlehorse.utils import to_variable_value

from fakes.littlehorse.core import abort, copied, now
from fakes.littlehorse.records import Stream, TaskRunKey, TaskRunRecord, key_of
from fakes.littlehorse.taskruns import TaskRuns
from fakes.littlehorse.values import compact_values


class TaskRpcs(TaskRuns):
    """What a ``littlehorse-client`` task worker calls, plus ``schedule()`` and waits."""

    # ------------------------------------------------------------------ test API

    def schedule(
        self,
        task_def_name: str,
        variables: Sequence[Any],
        *,
        wf_run_id: str | None = None,
        task_guid: str | None = None,
        attempt_number: int = 0,
        total_observed_checkpoints: int | None = None,
        timeout_s: float | None = None,
    ) -> TaskRunId:
        """Queue attempt ``attempt_number`` of a bare TaskRun (no WfRun) for the TaskDef.

        ``variables`` are positional inputs: ``VariableValue``s, or plain Python values
        converted with ``to_variable_value``. A retry is the same ``task_guid`` with a
        higher ``attempt_number``; skipped attempt numbers get TASK_FAILED placeholder
        attempts, and an earlier attempt still TASK_RUNNING becomes TASK_TIMEOUT (the
        only way the server starts a new attempt while one runs). The attempt counts
        as running from delivery until reported, ``expire()``d, or ``timeout_s``
        (server seconds, scaled by ``time_scale``) after delivery; None never times
        out. ``total_observed_checkpoints`` defaults to the TaskRun's checkpoints so far.
        """
        values = [
            compact_values(copied(v) if isinstance(v, VariableValue) else to_variable_value(v))
            for v in variables
        ]
        with self._cond:
            task_def = self.task_defs.get(task_def_name)
            if task_def is None:
                raise KeyError(f"TaskDef {task_def_name!r} is not registered")
            if len(values) != len(task_def.input_vars):
                raise ValueError(
                    f"TaskDef {task_def_name!r} takes {len(task_def.input_vars)} "
                    f"inputs, got {len(values)}"
                )
            key = (wf_run_id or uuid.uuid4().hex, task_guid or uuid.uuid4().hex)
            record = self._task_runs.get(key)
            if record is None:
                record = self._bare_task_run(key, task_def)
                self._task_runs[key] = record
            elif record.owner is not None:
                raise ValueError(f"TaskRun {key} belongs to WfRun {record.owner}")
            self._add_bare_attempt(record, attempt_number)
            record.timeout_s = timeout_s
            record.run.timeout_seconds = round(timeout_s or 0)
            record.run.task_def_id.name = task_def_name
            del record.run.input_variables[:]
            record.run.input_variables.extend(
                VarNameAndVal(var_name=d.name, value=v, masked=d.type_def.masked)
                for d, v in zip(task_def.input_vars, values, strict=True)
            )
            self._dispatch(record, total_observed_checkpoints)
            return TaskRunId(wf_run_id=WfRunId(id=key[0]), task_guid=key[1])

    def expire(
        self, task_guid: str, attempt_number: int | None = None, *, wf_run_id: str | None = None
    ) -> bool:
        """Time the attempt out now, as its timeout timer would (default: the latest attempt).

        Returns False when the attempt was not TASK_RUNNING (the server ignores such a
        timer too). ``wf_run_id`` is needed when several TaskRuns share the guid.
        """
        with self._cond:
            record = self._find_task_run(task_guid, wf_run_id)
            number = len(record.run.attempts) - 1 if attempt_number is None else attempt_number
            expired = self._time_out(record, number, now())
            self._cond.notify_all()
            return expired

    def task_run(self, task_guid: str, *, wf_run_id: str | None = None) -> TaskRun:
        """A copy of the TaskRun (as GetTaskRun returns it) with that guid."""
        with self._cond:
            return copied(self._find_task_run(task_guid, wf_run_id).run)

    def scheduled_at_ns(
        self, task_guid: str, attempt: int = 0, *, wf_run_id: str | None = None
    ) -> int:
        """When an attempt was scheduled (its ScheduledTask's ``created_at``), in ns."""
        stamp = self.task_run(task_guid, wf_run_id=wf_run_id).attempts[attempt].schedule_time
        return int(stamp.seconds) * 10**9 + int(stamp.nanos)

    def queued(self, task_def_name: str) -> int:
        """How many scheduled tasks of that TaskDef no worker has taken yet."""
        with self._cond:
            return len(self._queues.get(task_def_name, ()))

    def wait_report(
        self, task_guid: str, attempt_number: int | None = None, timeout_s: float = 30
    ) -> ReportTaskRun:
        """Block until the first report for that task (and attempt, if given) arrives."""

        def find() -> ReportTaskRun | None:
            for report in self.reports:
                if report.task_run_id.task_guid == task_guid and (
                    attempt_number is None or report.attempt_number == attempt_number
                ):
                    return report
            return None

        what = f"report for task {task_guid} attempt {attempt_number}"
        return self.wait_for(find, timeout_s, what)

    def wait_delivered(
        self, task_guid: str, attempt_number: int = 0, timeout_s: float = 30
    ) -> float:
        """Block until that attempt was sent to a worker; returns the monotonic send time."""
        key = (task_guid, attempt_number)
        return self.wait_for(lambda: self.delivered.get(key), timeout_s, f"delivery of {key}")

    def wait_polling(self, timeout_s: float = 30, *, task_def_name: str | None = None) -> None:
        """Block until a worker has a PollTask request waiting (for that TaskDef, if given)."""

        def polling() -> bool:
            if task_def_name is None:
                return self.polls_waiting > 0
            return self._waiting_by_def[task_def_name] > 0

        self.wait_for(polling, timeout_s, "a waiting PollTask request")

    def wait_task_def(self, name: str, timeout_s: float = 30) -> TaskDef:
        """Block until the TaskDef has been registered (by the worker, say) and reads see it."""
        return self.wait_for(
            lambda: self._visible_task_def(name), timeout_s, f"TaskDef {name} to be visible"
        )

    def crash_streams(self) -> int:
        """Cancel every open PollTask stream: the worker sees CANCELLED.

        Tasks still queued stay queued. The SDK worker notices a dead stream only at
        its next heartbeat (60 s). Returns how many streams were cancelled.
        """
        with self._cond:
            streams = [s for s in self._streams if not s.dead]
        for stream in streams:
            stream.context.cancel()  # its done-callback wakes the handler
        return len(streams)

    def kill_streams(self, message: str = "fake LittleHorse killed the stream") -> int:
        """End every open PollTask stream with UNAVAILABLE while the server stays up.

        A task taken for a stream but not yet sent goes back to the queue. Returns how
        many streams were told to end.
        """
        with self._cond:
            streams = [s for s in self._streams if not s.dead and s.kill is None]
            for stream in streams:
                stream.kill = message
            self._cond.notify_all()
        return len(streams)

    def drop_next_delivery(self) -> None:
        """Fault injection: cancel the stream that takes the next task, before sending it.

        The task goes back to the queue (``requeued`` counts such tasks) and its attempt
        back to TASK_SCHEDULED, as when a connection dies between the server choosing a
        task and the worker receiving it.
        """
        with self._cond:
            self._drops_pending += 1

    # ------------------------------------------------------------------ RPCs

    def RegisterTaskWorker(
        self, request: RegisterTaskWorkerRequest, context: grpc.ServicerContext
    ) -> RegisterTaskWorkerResponse:
        """Record the heartbeat and hand out the fake's own address to poll from."""
        with self._cond:
            self.registered_workers.add(request.task_worker_id)
            self.heartbeats += 1
            self._cond.notify_all()
        return RegisterTaskWorkerResponse(
            your_hosts=[{"host": self.advertised_host, "port": self.port}],
            is_cluster_healthy=True,
        )

    def PollTask(
        self, request_iterator: Iterator[PollTaskRequest], context: grpc.ServicerContext
    ) -> Iterator[PollTaskResponse]:
        """Answer each PollTaskRequest with the next queued task, waiting for one.

        Taking a task claims its attempt (TASK_RUNNING, timeout clock started). A task
        taken for a stream that ends before grpc confirmed sending it (the generator is
        never resumed after its ``yield``) goes back to the queue, unclaimed. Taking a
        task whose WfRun was deleted ends the stream with UNAVAILABLE, as on the server.
        """
        stream = Stream(context)
        with self._cond:
            if self._stopped:
                abort(context, grpc.StatusCode.UNAVAILABLE, "fake LittleHorse is stopping")
            self._streams.add(stream)
            self._cond.notify_all()

        def on_done() -> None:  # runs on grpc's thread once the RPC has ended
            with self._cond:
                stream.dead = True
                self._requeue_in_flight(stream)
                self._cond.notify_all()

        reader = threading.Thread(
            target=self._read_poll_requests,
            args=(stream, request_iterator),
            name="fake-lh-poll-reader",
            daemon=True,
        )
        try:
            if not context.add_callback(on_done):
                return
            reader.start()
            while True:
                request = self._next_poll_request(stream)
                task = None if request is None else self._take(request, stream)
                if task is None:
                    if stream.kill is not None:
                        abort(context, grpc.StatusCode.UNAVAILABLE, stream.kill)
                    return
                if self._drop_if_asked():
                    context.cancel()
                    self.wait_for(lambda: stream.dead, 10, "the dropped stream to end")
                yield PollTaskResponse(result=task)
                # grpc resumes the generator only after the response was sent.
                with self._cond:
                    stream.in_flight = None
        finally:
            with self._cond:
                self._requeue_in_flight(stream)
                self._streams.discard(stream)
                self._cond.notify_all()

    def ReportTask(self, request: ReportTaskRun, context: grpc.ServicerContext) -> Empty:
        """Record the report and apply it to its TaskRun; always OK, like the server.

        The server answers once the report is queued for processing, so a report for an
        unknown TaskRun or attempt, or for an attempt no longer TASK_RUNNING (say, timed
        out), still gets OK and is then ignored. ``reports`` keeps what the worker sent;
        the TaskRun stores JSON outputs and exception content compactly, as the server.
        """
        with self._cond:
            self.reports.append(request)  # as the worker sent it
            record = self._task_runs.get(key_of(request.task_run_id))
            if record is not None:
                self._apply_result(record, compact_values(copied(request)))
            self._cond.notify_all()
        return Empty()

    # ------------------------------------------------------------------ internals

    def _read_poll_requests(self, stream: Stream, requests: Iterator[PollTaskRequest]) -> None:
        try:
            for request in requests:
                with self._cond:
                    stream.requests.append(request)
                    self._cond.notify_all()
        except Exception:
            pass
        finally:
            with self._cond:
                stream.client_done = True
                self._cond.notify_all()

    def _next_poll_request(self, stream: Stream) -> PollTaskRequest | None:
        with self._cond:
            while not (stream.requests or stream.dead or stream.kill or stream.client_done):
                self._cond.wait()
            if stream.dead or stream.kill or not stream.requests:
                return None
            request = stream.requests.popleft()
            stream.client_id = request.client_id
            stream.worker_version = request.task_worker_version
            return request

    def _take(self, request: PollTaskRequest, stream: Stream) -> ScheduledTask | None:
        name = request.task_def_id.name
        with self._cond:
            self._waiting_by_def[name] += 1
            self._cond.notify_all()
            try:
                while not (self._stopped or stream.dead or stream.kill):
                    queue = self._queues.get(name)
                    if queue:
                        task = queue.popleft()
                        if self._orphaned.pop(id(task), None) is not None:
                            # TaskClaimEventModel fails for a deleted TaskRun, and the
                            # server ends the whole stream, the task consumed.
                            stream.kill = (
                                f"Task claim for TaskRun {task.task_run_id.wf_run_id.id}/"
                                f"{task.task_run_id.task_guid} could not be processed in "
                                "time. The task will likely time out."
                            )
                            self._cond.notify_all()
                            return None
                        stream.in_flight = task
                        self._claim(task, stream)
                        return task
                    self._cond.wait()
                return None
            finally:
                self._waiting_by_def[name] -= 1
                self._cond.notify_all()

    def _drop_if_asked(self) -> bool:
        with self._cond:
            if self._drops_pending <= 0:
                return False
            self._drops_pending -= 1
            return True

    def _requeue_in_flight(self, stream: Stream) -> None:
        """Put back a task taken for ``stream`` but not sent (caller holds the lock)."""
        task, stream.in_flight = stream.in_flight, None
        if task is None:
            return
        self.delivered.pop((task.task_run_id.task_guid, task.attempt_number), None)
        record = self._task_runs.get(key_of(task.task_run_id))
        if record is None:
            return  # its WfRun was deleted meanwhile
        attempts = record.run.attempts
        if task.attempt_number < len(attempts) and attempts[task.attempt_number].status not in (
            TaskStatus.TASK_SCHEDULED,
            TaskStatus.TASK_RUNNING,
        ):
            return  # it was sent after all: the worker already reported it
        self._enqueue_front(task)
        self.requeued += 1
        self._unclaim(task)
        self._cond.notify_all()

    def _enqueue_front(self, task: ScheduledTask) -> None:
        self._enqueue(task)
        queue = self._queues[task.task_def_id.name]
        queue.rotate(1)  # the task just appended goes first

    def _find_task_run(self, task_guid: str, wf_run_id: str | None) -> TaskRunRecord:
        if wf_run_id is not None:
            record = self._task_runs.get((wf_run_id, task_guid))
            if record is None:
                raise KeyError(f"no TaskRun {(wf_run_id, task_guid)}")
            return record
        found = [r for k, r in self._task_runs.items() if k[1] == task_guid]
        if len(found) != 1:
            raise KeyError(f"{len(found)} TaskRuns have guid {task_guid!r}; pass wf_run_id")
        return found[0]

    def _bare_task_run(self, key: TaskRunKey, task_def: TaskDef) -> TaskRunRecord:
        wf_id = WfRunId(id=key[0])
        run = TaskRun(
            id=TaskRunId(wf_run_id=wf_id, task_guid=key[1]),
            task_def_id=TaskDefId(name=task_def.id.name),
            source=TaskRunSource(
                task_node=TaskNodeReference(
                    node_run_id=NodeRunId(wf_run_id=wf_id, thread_run_number=0, position=1)
                )
            ),
            total_checkpoints=len(self.checkpoints.get(key, [])),
        )
        run.scheduled_at.FromDatetime(now())
        return TaskRunRecord(
            run, owner=None, timeout_s=None, indexed_status=TaskStatus.TASK_SCHEDULED
        )

    def _add_bare_attempt(self, record: TaskRunRecord, number: int) -> None:
        attempts = record.run.attempts
        if number < len(attempts) - 1:
            raise ValueError(f"attempt {number} is older than the latest ({len(attempts) - 1})")
        for attempt in attempts:
            if attempt.status == TaskStatus.TASK_RUNNING:
                attempt.status = TaskStatus.TASK_TIMEOUT
                attempt.end_time.FromDatetime(now())
        if number == len(attempts) - 1:  # the same attempt again: a fresh record of it
            attempts[number].CopyFrom(TaskAttempt(status=TaskStatus.TASK_PENDING))
            record.epochs[number] += 1
        while len(attempts) < number:
            placeholder = TaskAttempt(
                status=TaskStatus.TASK_FAILED,
                error=LHTaskError(
                    type=LHErrorType.TASK_ERROR,
                    message=f"placeholder: schedule() started this TaskRun at attempt {number}",
                ),
            )
            record.add_attempt(placeholder)
        if len(attempts) == number:
            record.add_attempt(TaskAttempt(status=TaskStatus.TASK_PENDING))
        record.run.total_attempts = len(attempts)
        record.indexed_status = TaskStatus.TASK_SCHEDULED
