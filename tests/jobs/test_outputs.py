"""Reading outputs back (jobs/outputs.py): only files a result lists, only from the output location."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from comfyui_worker.errors import ConfigError, OutputRejectedError, OutputStorageError
from comfyui_worker.jobs.outputs import OutputReader
from comfyui_worker.jobs.settings import JobsSettings
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
        with pytest.raises(OutputRejectedError, match="outside the output directory"):
            read(reader(out), path)


def test_reading_needs_the_output_location(tmp_path: Path):
    """Without COMFYUI_OUTPUT_DIR/WORKER_OUTPUT_URL nothing is read, and the error says what to set."""
    with pytest.raises(ConfigError, match="COMFYUI_OUTPUT_DIR"):
        read(reader(None), tmp_path / "a.png")
    with pytest.raises(ConfigError, match="WORKER_OUTPUT_URL"):
        read(reader(tmp_path), "s3://bucket/a.png")


def test_download_checks_each_file_against_its_sha256(tmp_path: Path):
    """Files land under DIR/<relative path>; one whose bytes changed is refused, nothing left."""
    from comfyui_worker.jobs.model import Job

    out = tmp_path / "out"
    (out / "r").mkdir(parents=True)
    (out / "r" / "a.png").write_bytes(b"png")
    output = {
        "node_id": "3",
        "key": "images",
        "filename": "a.png",
        "subfolder": "",
        "comfy_type": "output",
        "path": str(out / "r" / "a.png"),
        "relative_path": "sub/a.png",
        "size_bytes": 3,
        "sha256": hashlib.sha256(b"png").hexdigest(),
        "media_type": "image/png",
    }
    job = Job.model_validate(
        {
            "id": "j",
            "wf_spec": "w",
            "lane": "default",
            "status": "completed",
            "lh_status": "COMPLETED",
            "created_at": "2026-01-01T00:00:00Z",
            "queued_s": 0,
            "total_s": 1,
            "outputs": [output],
        }
    )
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
