"""Reading outputs back (jobs/outputs.py): only files a result lists, only from the output location."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from comfyui_worker.errors import (
    ConfigError,
    OutputNotReadableError,
    OutputRejectedError,
    OutputStorageError,
)
from comfyui_worker.jobs.model import Job
from comfyui_worker.jobs.outputs import OutputReader
from comfyui_worker.jobs.settings import JobsSettings
from comfyui_worker.result import ReportedResult
from comfyui_worker.settings import load


def reader(output_dir: Path | None) -> OutputReader:
    env = {"COMFYUI_OUTPUT_DIR": str(output_dir)} if output_dir else {}
    return OutputReader(load(JobsSettings, env))


def read(reader: OutputReader, path: Path | str) -> bytes:
    with reader.open(str(path)) as chunks:
        return b"".join(chunks)


def test_a_file_inside_the_output_dir_is_read(tmp_path: Path):
    """A listed file under COMFYUI_OUTPUT_DIR streams back whole."""
    (tmp_path / "out" / "run").mkdir(parents=True)
    (tmp_path / "out" / "run" / "a.png").write_bytes(b"png")
    assert read(reader(tmp_path / "out"), tmp_path / "out" / "run" / "a.png") == b"png"


def test_paths_outside_the_output_dir_are_refused(tmp_path: Path):
    """Absolute paths elsewhere, '..' and symlinks out of the directory are all refused."""
    out = tmp_path / "out"
    out.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("no")
    (out / "link").symlink_to(secret)
    for path in (secret, out / ".." / "secret.txt", out / "link"):
        with pytest.raises(OutputNotReadableError, match="outside the output directory"):
            read(reader(out), path)


def test_reading_needs_the_output_location(tmp_path: Path):
    """Without COMFYUI_OUTPUT_DIR/WORKER_OUTPUT_URL nothing is read, and the error says what to set."""
    with pytest.raises(ConfigError, match="COMFYUI_OUTPUT_DIR"):
        read(reader(None), tmp_path / "a.png")
    with pytest.raises(ConfigError, match="WORKER_OUTPUT_URL"):
        read(reader(tmp_path), "s3://bucket/a.png")


def test_download_checks_each_file_against_its_sha256(tmp_path: Path):
    """Files land under DIR/<relative path>; one whose bytes changed is refused, nothing left."""
    out = tmp_path / "out"
    (out / "r").mkdir(parents=True)
    (out / "r" / "a.png").write_bytes(b"png")
    output = png_output(str(out / "r" / "a.png"), "sub/a.png")
    job = job_with(None, [output])  # a result from an older worker: no run key
    assert reader(out).download(job, tmp_path / "dl") == [tmp_path / "dl" / "sub" / "a.png"]
    assert (tmp_path / "dl" / "sub" / "a.png").read_bytes() == b"png"
    (out / "r" / "a.png").write_bytes(b"changed")
    with pytest.raises(OutputStorageError, match="sha256"):
        reader(out).download(job, tmp_path / "dl2")
    assert not [path for path in (tmp_path / "dl2").rglob("*") if path.is_file()]  # no temp
    escaping = job.model_copy(
        update={"outputs": [job.outputs[0].model_copy(update={"relative_path": "../x.png"})]}
    )
    with pytest.raises(OutputRejectedError, match="plain relative path"):
        reader(out).download(escaping, tmp_path / "dl3")


def job_with(result: dict[str, object] | None, outputs: list[dict[str, object]]) -> Job:
    """A completed job whose result and outputs are as given."""
    return Job.model_validate(
        {
            "id": "j",
            "wf_spec": "w",
            "lane": "default",
            "status": "completed",
            "lh_status": "COMPLETED",
            "created_at": "2026-01-01T00:00:00Z",
            "queued_s": 0,
            "total_s": 1,
            "result": ReportedResult.read(result),
            "outputs": outputs,
        }
    )


def png_output(path: str, relative: str) -> dict[str, object]:
    """One saved PNG output as a result lists it."""
    return {
        "node_id": "3",
        "key": "images",
        "filename": "a.png",
        "subfolder": "sub",
        "comfy_type": "output",
        "path": path,
        "relative_path": relative,
        "size_bytes": 3,
        "sha256": hashlib.sha256(b"png").hexdigest(),
        "media_type": "image/png",
    }


def test_files_are_found_by_run_key_under_this_machines_location(tmp_path: Path):
    """A worker that wrote ``./output`` from elsewhere: the run key finds the file here."""
    out = tmp_path / "mounted" / "output"
    (out / "wf-1" / "g" / "sub").mkdir(parents=True)
    (out / "wf-1" / "g" / "sub" / "a.png").write_bytes(b"png")
    output = png_output("output/wf-1/g/sub/a.png", "sub/a.png")  # relative to another cwd
    job = job_with({"run_key": "wf-1/g", "outputs": [output]}, [output])
    with reader(out).open_output(job, job.outputs[0]) as chunks:
        assert b"".join(chunks) == b"png"
    assert reader(out).download(job, tmp_path / "dl") == [tmp_path / "dl" / "sub" / "a.png"]


def test_a_run_key_that_would_leave_the_location_is_not_readable(tmp_path: Path):
    """``..`` in a result's run key is ``output-not-readable``, not ``output-rejected``."""
    (tmp_path / "secret.png").write_bytes(b"png")
    output = png_output("/elsewhere/a.png", "secret.png")
    job = job_with({"run_key": "../..", "outputs": [output]}, [output])
    with pytest.raises(OutputNotReadableError, match="not a plain relative path"):
        reader(tmp_path / "out").open_output(job, job.outputs[0])
