"""WORKER_OUTPUT_URL: choosing the store, and the real worker writing to a real S3 (SeaweedFS)."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from littlehorse.model import TaskStatus

from comfyui_worker.errors import ConfigError
from comfyui_worker.outputs.objstore import ObjectStore
from comfyui_worker.outputs.store import LocalStore, open_store
from fakes.comfyui import FakeComfyUI
from fakes.littlehorse import FakeLittleHorse
from fakes.seaweed import CuttingProxy, SeaweedS3
from tests.conftest import make_settings, wait_until
from tests.graphs import smoke
from tests.worker.test_task import TASK, WorkerProcess, free_port, readyz


def test_a_directory_is_the_default(tmp_path: Path):
    """Without WORKER_OUTPUT_URL, outputs go to COMFYUI_OUTPUT_DIR."""
    assert isinstance(open_store(make_settings("http://c", tmp_path)), LocalStore)


def test_a_relative_directory_is_stored_as_an_absolute_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """``COMFYUI_OUTPUT_DIR=./output``: results name the directory the same from anywhere."""
    monkeypatch.chdir(tmp_path)
    store = open_store(make_settings("http://c", Path("output")))
    run = store.run("wf-1/g")
    assert run.location == str(tmp_path / "output" / "wf-1" / "g")


def test_an_s3_url_opens_an_object_store(tmp_path: Path):
    """s3://bucket/prefix with AWS_* credentials gives the object store (nothing contacted)."""
    settings = make_settings(
        "http://c",
        tmp_path,
        WORKER_OUTPUT_URL="s3://outputs/comfy",
        AWS_ACCESS_KEY_ID="key",
        AWS_SECRET_ACCESS_KEY="secret",
        AWS_REGION="eu-west-1",
    )
    store = open_store(settings)
    assert isinstance(store, ObjectStore) and store.location == "s3://outputs/comfy"


@pytest.mark.parametrize("url", ["gs://b/p", "az://c/p", "ftp://h/p"])
def test_unsupported_schemes_are_a_configuration_error(tmp_path: Path, url: str):
    """gs://, az:// and unknown schemes stop start-up with one line naming the variable."""
    with pytest.raises(ConfigError, match="WORKER_OUTPUT_URL"):
        open_store(make_settings("http://c", tmp_path, WORKER_OUTPUT_URL=url))


def test_an_output_location_is_required():
    """Neither COMFYUI_OUTPUT_DIR nor WORKER_OUTPUT_URL: one line, naming both."""
    from comfyui_worker.settings import load_comfy

    with pytest.raises(ConfigError, match="WORKER_OUTPUT_URL"):
        load_comfy({"COMFYUI_BASE_URL": "http://c"})


def s3_env(seaweed: SeaweedS3, prefix: str, **overrides: str) -> dict[str, str]:
    return {
        "WORKER_OUTPUT_URL": f"s3://{seaweed.bucket}/{prefix}",
        "AWS_ACCESS_KEY_ID": seaweed.access_key,
        "AWS_SECRET_ACCESS_KEY": seaweed.secret_key,
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": seaweed.endpoint,
        **overrides,
    }


def objects(seaweed: SeaweedS3, prefix: str) -> dict[str, Any]:
    listed = seaweed.client().list_objects_v2(Bucket=seaweed.bucket, Prefix=prefix)
    return {item["Key"]: item for item in listed.get("Contents", [])}


@pytest.mark.slow
def test_the_worker_stores_outputs_in_s3_under_the_task_prefix(
    seaweed: SeaweedS3, comfy: FakeComfyUI, tmp_path: Path
):
    """A task's files and manifest land in the bucket; the result gives their URLs."""
    prefix = f"run-{uuid.uuid4().hex[:8]}"
    with FakeLittleHorse() as lh:
        env = worker_env(lh, comfy, tmp_path, **s3_env(seaweed, prefix))
        worker = WorkerProcess(env, tmp_path / "worker.log")
        try:
            lh.wait_polling(timeout_s=30)
            guid = uuid.uuid4().hex
            task = {"workflow": smoke(50), "output": {"prefix": "conversations/c42"}}
            lh.schedule(TASK, [task], wf_run_id="wf-s3", task_guid=guid)
            report = lh.wait_report(guid, timeout_s=60)
        finally:
            worker.stop()
    assert report.status == TaskStatus.TASK_SUCCESS, report
    result = json.loads(report.output.json_obj)
    run = f"{prefix}/conversations/c42/wf-s3/{guid}"
    assert result["output_dir"] == f"s3://{seaweed.bucket}/{run}"
    assert result["manifest"] == f"s3://{seaweed.bucket}/{run}/manifest.json"
    [output] = result["outputs"]
    stored = objects(seaweed, run)
    key = output["path"].removeprefix(f"s3://{seaweed.bucket}/")
    assert key in stored and f"{run}/manifest.json" in stored
    body = seaweed.client().get_object(Bucket=seaweed.bucket, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == output["sha256"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "expected"),
    [({"AWS_SECRET_ACCESS_KEY": "wrong"}, "credentials"), ({"bucket": "no-such-bucket"}, "bucket")],
    ids=["wrong-key", "missing-bucket"],
)
def test_a_broken_store_is_not_ready_and_takes_no_task(
    seaweed: SeaweedS3,
    comfy: FakeComfyUI,
    tmp_path: Path,
    change: dict[str, str],
    expected: str,
):
    """A wrong key or a missing bucket: one clear line in /readyz, and no task is claimed."""
    bucket = change.pop("bucket", seaweed.bucket)
    env_s3 = s3_env(seaweed, "broken", **change)
    env_s3["WORKER_OUTPUT_URL"] = f"s3://{bucket}/broken"
    port = free_port()
    with FakeLittleHorse() as lh:
        env = worker_env(lh, comfy, tmp_path, WORKER_HTTP_PORT=str(port), **env_s3)
        worker = WorkerProcess(env, tmp_path / "worker.log")
        try:
            lh.wait_task_def(TASK)
            lh.schedule(TASK, [smoke(51)], task_guid=uuid.uuid4().hex)
            wait_until(lambda: readyz(port).get("output", "ok") != "ok", timeout_s=30)
            problem = readyz(port)["output"]
            assert expected in problem.lower() and "\n" not in problem
            assert seaweed.secret_key not in problem and "wrong" not in problem
            assert lh.queued(TASK) == 1 and comfy.submitted == []
        finally:
            worker.stop()


def worker_env(
    lh: FakeLittleHorse, comfy: FakeComfyUI, tmp_path: Path, **extra: str
) -> dict[str, str]:
    import os

    return {
        "PATH": os.environ.get("PATH", ""),
        **lh.env(),
        "COMFYUI_BASE_URL": comfy.base_url,
        "COMFYUI_POLL_INTERVAL_SEC": "0.2",
        "WORKER_HTTP_PORT": "0",
        "WORKER_HTTP_HOST": "127.0.0.1",
        "WORKER_LOG_FORMAT": "json",
        **extra,
    }


@pytest.mark.slow
def test_a_task_claimed_while_the_store_is_down_waits_instead_of_failing(
    seaweed: SeaweedS3, comfy: FakeComfyUI, tmp_path: Path
):
    """The poll request went out while S3 was fine; its task waits for S3 and spends no retry."""
    port = free_port()
    with FakeLittleHorse() as lh, CuttingProxy(seaweed.port) as proxy:
        store = s3_env(seaweed, f"wait-{uuid.uuid4().hex[:8]}", AWS_ENDPOINT_URL=proxy.endpoint)
        env = worker_env(lh, comfy, tmp_path, WORKER_HTTP_PORT=str(port), **store)
        worker = WorkerProcess(env, tmp_path / "worker.log")
        try:
            lh.wait_polling(timeout_s=30)  # a poll request waits at LittleHorse
            proxy.cut_after(0)
            wait_until(lambda: readyz(port).get("output", "ok") != "ok", timeout_s=30)
            guid = uuid.uuid4().hex
            lh.schedule(TASK, [smoke(52)], wf_run_id="wf-wait", task_guid=guid)
            lh.wait_delivered(guid)
            wait_until(lambda: "task.waiting_until_ready" in worker.logs(), timeout_s=30)
            assert comfy.submitted == []
            proxy.heal()
            report = lh.wait_report(guid, timeout_s=60)
        finally:
            worker.stop()
    assert report.status == TaskStatus.TASK_SUCCESS and report.attempt_number == 0, report
    assert len(comfy.submitted) == 1
