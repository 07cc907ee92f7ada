"""The job commands: ``submit`` and ``jobs`` (list, ``show``, ``retry``, ``cancel``).

Argument handling and printing only; the job logic is ``jobs/client.py``. Progress goes to
stderr and data (ids, result JSON, tables) to stdout. ``submit --wait`` exits as
``main.py run`` would: 0, or the exit code of the error class the job failed with.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

from comfyui_worker.errors import ExitCode
from comfyui_worker.jobs import text
from comfyui_worker.jobs.args import image_flag
from comfyui_worker.jobs.client import JobQuery, Jobs
from comfyui_worker.jobs.follow import follow, outcome
from comfyui_worker.jobs.input import check_parameters, task_from_arguments
from comfyui_worker.jobs.model import FINISHED, STATUS_FILTERS, JobStatus
from comfyui_worker.jobs.outputs import OutputReader
from comfyui_worker.jobs.settings import JobsSettings
from comfyui_worker.jobs.staging import image_source
from comfyui_worker.lh import lanes
from comfyui_worker.lh.api import LittleHorse, lh_config
from comfyui_worker.settings import WorkerSettings, load
from comfyui_worker.workflow.templates import load_templates


def connect(settings: WorkerSettings) -> Jobs:
    """The jobs of the LittleHorse cluster the settings name."""
    return Jobs(LittleHorse(lh_config(), settings.lh_address))


def run(args: argparse.Namespace, settings: WorkerSettings) -> int:
    """Run ``submit`` or ``jobs ...``."""
    jobs = connect(settings)
    if args.command == "submit":
        return _submit(args, jobs)
    actions = {None: _list, "show": _show, "retry": _retry, "cancel": _cancel}
    return actions[args.action](args, jobs)


def _submit(args: argparse.Namespace, jobs: Jobs) -> int:
    settings = load(JobsSettings)
    templates = load_templates(settings.workflows_dir)
    stage = functools.partial(image_source, input_dir=settings.input_dir)
    task_input = task_from_arguments(args, templates, stage)
    check_parameters(task_input, templates, image_flag)
    submitted = jobs.submit(task_input, wf_spec=_wf_spec(args), job_id=args.id)
    again = "" if submitted.created else " (it existed already, with this same input)"
    if not (args.wait or args.download):
        if again:
            _say(f"job {submitted.id}{again}")
        print(submitted.id)
        return ExitCode.OK
    _say(f"job {submitted.id} submitted to {submitted.wf_spec}{again}")
    return _wait(jobs, submitted.id, args.download, settings)


def _list(args: argparse.Namespace, jobs: Jobs) -> int:
    query = JobQuery(
        wf_specs=(_wf_spec(args),),
        statuses=STATUS_FILTERS[args.status] if args.status else frozenset(),
        since=args.since,
        limit=max(1, args.limit),
        retry_of=args.retry_of,
    )
    found = jobs.recent(query)
    if args.json:
        print(json.dumps([job.summary() for job in found], indent=2))
    elif found:
        print(text.table(found))
    else:
        _say("no jobs match")
    return ExitCode.OK


def _show(args: argparse.Namespace, jobs: Jobs) -> int:
    job = jobs.get(args.id)
    retries = jobs.retries_of(job)
    if args.json:
        print(json.dumps(job.detail(retries), indent=2))
    else:
        print(text.details(job, retries))
    return ExitCode.OK


def _retry(args: argparse.Namespace, jobs: Jobs) -> int:
    submitted = jobs.retry(args.id, new_id=args.new_id)
    if not args.wait:
        print(submitted.id)
        return ExitCode.OK
    _say(f"job {submitted.id} submitted to {submitted.wf_spec} as a retry of {args.id}")
    return _wait(jobs, submitted.id, None, load(JobsSettings))


def _cancel(args: argparse.Namespace, jobs: Jobs) -> int:
    job = jobs.cancel(args.id)
    if job.status in FINISHED and job.status != JobStatus.CANCELLED:
        _say(f"job {job.id} had already {job.status.value}; nothing to cancel")
        return ExitCode.OK
    if args.wait and job.status != JobStatus.CANCELLED:
        job = follow(jobs, job.id, _say)
    else:
        _say(outcome(job))
    print(job.id)
    return ExitCode.OK


def _wait(jobs: Jobs, job_id: str, download: Path | None, settings: JobsSettings) -> int:
    """Follow to the end; print the result JSON (and fetch the outputs) if it completed."""
    try:
        job = follow(jobs, job_id, _say)
    except KeyboardInterrupt:
        _say(f"stopped following job {job_id}; it goes on (main.py jobs cancel {job_id})")
        return ExitCode.INTERRUPTED
    if job.status != JobStatus.COMPLETED:
        return job.exit_code
    if download is not None:
        for path in OutputReader(settings).download(job, download):
            _say(f"downloaded {path}")
    print(json.dumps(job.result.stored if job.result else None, indent=2))
    return ExitCode.OK


def _wf_spec(args: argparse.Namespace) -> str:
    return str(args.wf_spec) if args.wf_spec else lanes.wf_spec_name(args.lane)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
