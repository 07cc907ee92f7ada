"""Jobs on LittleHorse (jobs/client.py, jobs/read.py, jobs/follow.py): the fake runs real WfRuns of the WfSpec."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from littlehorse import to_variable_value
from littlehorse.model import RunWfRequest

from comfyui_worker.errors import (
    InvalidWorkflowError,
    LittleHorseError,
    LittleHorseUnavailableError,
    NotFoundError,
)
from comfyui_worker.jobs.client import JobQuery, Jobs
from comfyui_worker.jobs.follow import changes, follow
from comfyui_worker.jobs.model import JobStatus
from comfyui_worker.lh.api import LittleHorse
from comfyui_worker.lh.wfspec import WF_SPEC_NAME
from fakes.littlehorse import FakeLittleHorse
from tests.jobstub import StubLittleHorse


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StubLittleHorse]:
    root = tmp_path_factory.mktemp("jobs")
    with StubLittleHorse(root / "out", root / "elsewhere") as running:
        yield running


@pytest.fixture
def jobs(stub: StubLittleHorse) -> Jobs:
    return stub.jobs


def job_input(mode: str, **params: object) -> dict[str, object]:
    return {"template": "smoke", "params": {"mode": mode, **params}}


def run(stub: StubLittleHorse, mode: str, **params: object) -> str:
    job_id = stub.jobs.submit(job_input(mode, **params)).id
    stub.wait_done(job_id)
    return job_id


def test_a_completed_job_reads_back_with_its_outputs_trail_and_timings(stub, jobs):
    """A WfRun that completed is a job with its template, params, outputs and attempt trail."""
    job = jobs.get(run(stub, "ok", color=255))
    assert job.status == JobStatus.COMPLETED and job.lh_status == "COMPLETED"
    assert job.template == "smoke" and job.params == {"mode": "ok", "color": 255}
    assert job.wf_spec == WF_SPEC_NAME and job.lane == "default"
    [output] = job.outputs
    assert output.media_type == "image/png" and Path(output.path).is_file()
    [attempt] = job.attempts
    assert attempt.status == "TASK_SUCCESS" and "stub ok, attempt 0" in attempt.log
    assert job.started_at and job.ended_at
    assert job.created_at <= job.started_at <= job.ended_at
    assert job.error is None and job.exit_code == 0


def test_a_chosen_id_runs_once_and_a_different_input_is_refused(stub, jobs):
    """The same id and input again is the existing job; another input under that id is an error."""
    job_id = f"job-{uuid.uuid4().hex[:8]}"
    first = jobs.submit(job_input("ok"), job_id=job_id)
    again = jobs.submit(job_input("ok"), job_id=job_id)
    assert first.created and not again.created and again.id == job_id
    with pytest.raises(LittleHorseError, match="already exists with a different input"):
        jobs.submit(job_input("ok", color=1), job_id=job_id)
    assert len(stub.lh.task_run("0-1", wf_run_id=job_id).attempts) == 1


def test_a_failed_job_names_the_node_and_exits_like_run(stub, jobs):
    """A node error is the job's error with node id, type and message; exit code 5."""
    job = jobs.get(run(stub, "fail"))
    assert job.status == JobStatus.FAILED and job.error is not None
    assert job.error.name == "execution-failed"
    assert (job.error.node_id, job.error.node_type) == ("2", "ImageBlur")
    assert job.error.exception_message == "boom" and job.exit_code == 5
    assert "node 2 (ImageBlur)" in job.error.one_line()


def test_technical_failures_show_every_attempt_and_the_last_error(stub, jobs):
    """After its retries the job fails as task-failed, naming the last attempt's own error (exit 6)."""
    stub.lh.time_scale = 1e-4  # the three backoffs (5, 10, 20 s) take 3.5 ms
    try:
        job = jobs.get(run(stub, "down"))
    finally:
        stub.lh.time_scale = 1e-2
    assert job.error is not None and job.error.name == "task-failed"
    assert "comfyui-unavailable" in str(job.error.last_attempt)
    assert [a.status for a in job.attempts] == ["TASK_FAILED"] * 4 and job.max_attempts == 4
    assert job.exit_code == 6
    assert [str(a.error) for a in job.attempts] == [  # the SDK's traceback, down to its last line
        "RuntimeError: comfyui-unavailable: ComfyUI at http://gpu-1 is unreachable"
    ] * 4


def test_ran_is_the_last_attempts_run_not_time_since_the_first_claim(stub, jobs):
    """A retried job ran as long as its worker measured the last attempt, not counting backoff."""
    job = jobs.get(run(stub, "flaky"))
    assert job.status == JobStatus.COMPLETED and len(job.attempts) == 2
    assert job.run_s == 0.25  # executing 200 ms + downloading 50 ms, from the result
    stub.lh.time_scale = 1e-4
    try:
        failed = jobs.get(run(stub, "down"))
    finally:
        stub.lh.time_scale = 1e-2
    last = failed.attempts[-1]
    assert last.started_at and last.ended_at and failed.started_at == failed.attempts[0].started_at
    assert failed.run_s == round((last.ended_at - last.started_at).total_seconds(), 3)


def test_a_result_of_the_wrong_shape_is_read_defensively(stub, jobs):
    """A result variable set by hand ({"outputs": 5}) lists and shows; nothing crashes."""
    job_id = f"junk-{uuid.uuid4().hex[:8]}"
    junk = {"outputs": 5, "template": 7, "params": "x", "manifest": ["no"]}
    stub.config.stub().RunWf(
        RunWfRequest(
            wf_spec_name=WF_SPEC_NAME,
            id=job_id,
            variables={
                "workflow": to_variable_value(job_input("fail")),
                "result": to_variable_value(junk),
            },
        )
    )
    stub.wait_done(job_id)
    failed = jobs.recent(JobQuery(statuses=frozenset({JobStatus.FAILED}), limit=100))
    [job] = [job for job in failed if job.id == job_id]
    assert job.outputs == [] and job.template == "smoke" and job.error is not None
    assert job.params == {"mode": "fail"} and job.error.name == "execution-failed"


def test_following_a_job_reports_the_retry_and_the_outcome(stub, jobs):
    """follow() says when an attempt failed and will be retried, then that the job completed."""
    job_id = jobs.submit(job_input("flaky")).id
    lines: list[str] = []
    job = follow(jobs, job_id, lines.append, interval_s=0.01)
    assert job.status == JobStatus.COMPLETED
    assert any("attempt 1/4: failed (will be retried)" in line for line in lines), lines
    assert lines[-1].startswith(f"job {job_id} completed")
    assert changes(job, job) == []


def test_an_attempt_that_ran_between_two_reads_still_says_where_it_started(stub, jobs):
    """A task shorter than a poll: the first read sees it done, and names its worker."""
    job = jobs.get(run(stub, "ok"))
    lines = changes(None, job)
    assert lines[0] == f"attempt 1/{job.max_attempts}: started on worker {job.attempts[0].worker}"
    assert lines[1].startswith("attempt 1/") and "finished in" in lines[1]
    assert lines[-1].startswith(f"job {job.id} completed")


def test_retry_repeats_the_input_and_is_findable_by_what_it_retries(stub, jobs):
    """A retry is a new WfRun with the same input and retry_of set; LittleHorse finds it by that."""
    failed = run(stub, "fail")
    retry = jobs.retry(failed)
    stub.wait_done(retry.id)
    again = jobs.get(retry.id)
    assert again.retry_of == failed and again.input == jobs.get(failed).input
    assert jobs.retries_of(jobs.get(failed)) == [retry.id]
    assert [j.id for j in jobs.recent(JobQuery(retry_of=failed))] == [retry.id]


def test_cancel_stops_the_running_job_which_then_shows_cancelled(stub, jobs):
    """StopWfRun: the job is cancelling until its worker reports, then cancelled (exit 5)."""
    job_id = jobs.submit(job_input("hold")).id
    stub.wait_running(job_id)
    assert jobs.get(job_id).status == JobStatus.RUNNING
    assert jobs.cancel(job_id).status in (JobStatus.CANCELLING, JobStatus.CANCELLED)
    stub.wait_done(job_id)
    job = jobs.get(job_id)
    assert job.status == JobStatus.CANCELLED and job.lh_status == "RUNNING"
    assert job.error is not None and job.error.name == "execution-interrupted"
    assert job.exit_code == 5
    done = run(stub, "ok")
    assert jobs.cancel(done).status == JobStatus.COMPLETED  # nothing to stop


def test_recent_lists_newest_first_filtered_by_status_time_and_limit(stub, jobs):
    """Lists come from SearchWfRun: newest first, by derived status, start time and limit."""
    spec = "comfyui-generate-list"
    stub.register(spec)
    ids = []
    for mode in ("ok", "fail", "ok"):
        ids.append(jobs.submit(job_input(mode), wf_spec=spec).id)
        stub.wait_done(ids[-1])
    held = jobs.submit(job_input("hold"), wf_spec=spec).id
    stub.wait_running(held)

    def listed(**query: Any) -> list[str]:
        return [job.id for job in jobs.recent(JobQuery(wf_specs=(spec,), **query))]

    assert listed() == [held, *reversed(ids)]
    assert listed(statuses=frozenset({JobStatus.COMPLETED})) == [ids[2], ids[0]]
    assert listed(statuses=frozenset({JobStatus.FAILED})) == [ids[1]]
    assert listed(statuses=frozenset({JobStatus.RUNNING, JobStatus.QUEUED})) == [held]
    assert listed(limit=2) == [held, ids[2]]
    assert listed(since=datetime.now(UTC) + timedelta(minutes=1)) == []
    jobs.cancel(held)
    stub.wait_done(held)
    assert listed(statuses=frozenset({JobStatus.CANCELLED})) == [held]


def test_unknown_jobs_and_wf_specs_are_not_found(jobs):
    """An unknown id, or a WfSpec nobody registered, is NotFoundError with what to do."""
    with pytest.raises(NotFoundError, match="no job 'nope'"):
        jobs.get("nope")
    with pytest.raises(NotFoundError, match=r"main\.py register"):
        jobs.submit(job_input("ok"), wf_spec="comfyui-generate-nowhere")
    with pytest.raises(NotFoundError, match=r"main\.py register"):
        jobs.recent(JobQuery(wf_specs=("comfyui-generate-nowhere",)))


def test_an_oversized_input_is_refused_before_littlehorse(jobs):
    """An input past LittleHorse's record size is invalid-workflow, with the way out."""
    big = {"template": "smoke", "images": [{"name": "image", "base64": "A" * 1_000_000}]}
    with pytest.raises(InvalidWorkflowError, match="path or url"):
        jobs.submit(big)


def test_unreachable_littlehorse_is_one_error():
    """No server at the address: LittleHorseUnavailableError naming it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    lh = FakeLittleHorse()
    lh.port = port  # never started: nothing listens there
    jobs = Jobs(LittleHorse(lh.config(), f"127.0.0.1:{port}", timeout_s=5))
    with pytest.raises(LittleHorseUnavailableError, match=f"127.0.0.1:{port}"):
        jobs.get("any")
