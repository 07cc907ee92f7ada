"""Shared fixtures: settings builders, instant retries (stamina's test mode), SeaweedFS."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import stamina

from comfyui_worker.run.execution import Runner
from comfyui_worker.run.fencing import Submission
from comfyui_worker.settings import ComfySettings, load_comfy
from comfyui_worker.worker.task import prompt_id_for
from comfyui_worker.workflow.request import Identity, RunRequest, TaskPreparer
from comfyui_worker.workflow.templates import TemplateSet
from fakes.comfyui import FakeComfyUI

# Session-wide SeaweedFS (`seaweed`) and real LittleHorse (`real_lh`); `littlehorse`
# (each scenario on the fake and on the real server) and the job `stack` built on it.
pytest_plugins = ["tests.seaweed", "tests.lhserver", "tests.servers", "tests.stack"]


@pytest.fixture(autouse=True)
def _instant_retries() -> Iterator[None]:
    """Retries still happen, up to the configured attempts, but without sleeping."""
    with stamina.set_testing(True, attempts=100, cap=True):
        yield


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_settings(base_url: str, output_dir: Path, **env: str) -> ComfySettings:
    """ComfySettings as the environment would give them."""
    return load_comfy({"COMFYUI_BASE_URL": base_url, "COMFYUI_OUTPUT_DIR": str(output_dir), **env})


@pytest.fixture
def comfy(tmp_path: Path) -> Iterator[FakeComfyUI]:
    """A fake ComfyUI over real HTTP + WebSocket on 127.0.0.1."""
    fake = FakeComfyUI(tmp_path / "comfy").start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def settings(comfy: FakeComfyUI, tmp_path: Path) -> ComfySettings:
    """Settings pointing at the fake, with short poll intervals."""
    return make_settings(
        comfy.base_url,
        tmp_path / "out",
        COMFYUI_POLL_INTERVAL_SEC="0.2",
        COMFYUI_HISTORY_TIMEOUT_SEC="20",
        COMFYUI_WORKFLOWS_DIR=str(Path(__file__).parent.parent / "workflows"),
    )


@pytest.fixture
def runner(settings: ComfySettings) -> Iterator[Runner]:
    """The real execution loop against the fake."""
    r = Runner(settings)
    try:
        yield r
    finally:
        r.close()


def prompt_of(lh: Any, wf_run_id: str, guid: str, attempt: int = 0) -> str:
    """The prompt id the worker gives an attempt: it names when LittleHorse scheduled it."""
    scheduled = lh.scheduled_at_ns(guid, attempt, wf_run_id=wf_run_id)
    return prompt_id_for(wf_run_id, guid, attempt, scheduled)


def wait_until(condition: Callable[[], object], timeout_s: float = 10.0) -> None:
    """Poll ``condition`` until true (for facts a fake records asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        time.sleep(0.02)


_PREPARER = TaskPreparer(
    make_settings("http://unused.test", Path("/nonexistent")), templates=TemplateSet(Path("."))
)


def make_request(
    graph: Any,
    *,
    prompt_id: str | None = None,
    run_key: str | None = None,
    fresh: bool = False,
) -> RunRequest:
    """A request built the way the worker builds one: parsed and validated once."""
    prompt_id = prompt_id or str(uuid.uuid4())
    identity = Identity(prompt_id, run_key or prompt_id, fresh=fresh)
    return _PREPARER.request(graph, identity)


class RecordedFence:
    """What LittleHorse's checkpoints would hold: submissions earlier attempts recorded."""

    def __init__(self, *earlier: Submission) -> None:
        self.earlier = list(earlier)
        self.recorded: list[Submission] = []
        self.started_prompts: list[str] = []

    def record(
        self, comfyui_url: str, prompt_id: str, graph_sha256: str, queued_behind: int = 0
    ) -> None:
        submission = Submission(comfyui_url, prompt_id, "test", 1, graph_sha256, queued_behind)
        self.recorded.append(submission)

    def started(self, prompt_id: str) -> None:
        self.started_prompts.append(prompt_id)


def recorded(comfyui_url: str, prompt_id: str, graph: Any) -> Submission:
    """An earlier attempt's record of submitting ``graph`` (as the worker validated it)."""
    return Submission(comfyui_url, prompt_id, "earlier", 0, make_request(graph).graph_sha256)


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs mounted for the test (needs root, as in CI)."""
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
