"""Declared models against a fake ComfyUI that lists a real models directory, and a real HTTP server."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from comfyui_worker.comfy.client import ComfyClient
from comfyui_worker.errors import ComfyWorkerError, InvalidWorkflowError, ModelStorageError
from comfyui_worker.models.ensure import ModelEnsurer, Outcome
from comfyui_worker.models.ledger import Ledger
from comfyui_worker.models.sources import Sources
from comfyui_worker.run.execution import Runner
from comfyui_worker.run.warmup import WarmUp
from comfyui_worker.settings import ComfySettings
from comfyui_worker.workflow.modeldecl import ModelDecl
from comfyui_worker.workflow.request import Identity, RunRequest, TaskPreparer
from fakes.comfyui import FakeComfyUI
from tests.conftest import make_settings, wait_until
from tests.modelserver import ModelServer

WORKFLOWS = Path(__file__).parent.parent.parent / "workflows"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ModelServer]:
    """A local HTTP server for model files."""
    (tmp_path / "served").mkdir()
    with ModelServer(tmp_path / "served") as s:
        yield s


def settings_for(comfy: FakeComfyUI, tmp_path: Path, models_dir: Path, **env: str) -> ComfySettings:
    defaults = {
        "COMFYUI_MODELS_DIR": str(models_dir),
        "COMFYUI_MODELS_URL_ALLOW": "127.0.0.1",
        "COMFYUI_POLL_INTERVAL_SEC": "0.2",
        "COMFYUI_WORKFLOWS_DIR": str(WORKFLOWS),
    }
    return make_settings(comfy.base_url, tmp_path / "out", **{**defaults, **env})


@pytest.fixture
def settings(comfy: FakeComfyUI, tmp_path: Path, models_dir: Path) -> ComfySettings:
    """Worker settings with the models directory and 127.0.0.1 allowed."""
    return settings_for(comfy, tmp_path, models_dir)


@pytest.fixture
def runner(settings: ComfySettings) -> Iterator[Runner]:
    """The real runner (its ensurer, its object_info cache)."""
    with Runner(settings) as r:
        yield r


def declare(server: ModelServer, name: str, data: bytes, **kw: Any) -> ModelDecl:
    sha = server.add(name.replace("/", "_"), data)
    fields = {"folder": "checkpoints", "name": name, "url": server.url(name.replace("/", "_"))}
    return ModelDecl.model_validate({**fields, "sha256": sha, **kw})


def ensure(ensurer: ModelEnsurer, *models: ModelDecl) -> tuple[list[Outcome], list[str]]:
    trail: list[str] = []
    with ensurer.ensured(models, trail.append) as outcomes:
        return outcomes, trail


def test_missing_model_is_downloaded_whole_and_listed(
    runner: Runner, server: ModelServer, models_dir: Path, comfy: FakeComfyUI
) -> None:
    """A model ComfyUI lacks is downloaded, verified, listed by ComfyUI and in the ledger."""
    data = os.urandom(300_000)
    model = declare(server, "sub/base.safetensors", data)
    outcomes, trail = ensure(runner.models, model)
    assert (models_dir / "checkpoints/sub/base.safetensors").read_bytes() == data
    assert outcomes[0].downloaded is not None and outcomes[0].downloaded.size_bytes == len(data)
    assert trail[0].startswith("model sub/base.safetensors: downloaded 300.0 KB in ")
    assert "sub/base.safetensors" in comfy.installed("checkpoints")
    assert set(Ledger(models_dir).entries()) == {"checkpoints/sub/base.safetensors"}
    assert [p.name for p in (models_dir / "checkpoints/sub").iterdir()] == ["base.safetensors"]


def test_a_model_comfyui_has_is_present_without_a_download(
    runner: Runner, server: ModelServer, comfy: FakeComfyUI
) -> None:
    """ComfyUI listing the file (GET /models/{folder}) means no request to the source."""
    comfy.checkpoints = ["have.safetensors"]
    model = declare(server, "have.safetensors", b"x")
    outcomes, trail = ensure(runner.models, model)
    assert trail == ["model have.safetensors: present"] and outcomes[0].downloaded is None
    assert server.requests == [] and ("GET", "/models/checkpoints") in comfy.requests


def test_wrong_sha256_keeps_nothing(runner: Runner, server: ModelServer, models_dir: Path) -> None:
    """A wrong sha256 is invalid-workflow naming the model; no file, no partial file."""
    model = declare(server, "bad.safetensors", b"abc", sha256="0" * 64)
    with pytest.raises(InvalidWorkflowError, match=r"model 'bad\.safetensors': the downloaded"):
        ensure(runner.models, model)
    assert list((models_dir / "checkpoints").iterdir()) == []


def test_a_404_is_invalid_workflow_naming_the_model(
    runner: Runner, server: ModelServer, models_dir: Path
) -> None:
    """A source that answers 404 is the declaration's fault."""
    model = ModelDecl(
        folder="loras", name="gone.safetensors", url=server.url("gone"), sha256="a" * 64
    )
    with pytest.raises(InvalidWorkflowError, match=r"model 'gone.safetensors'.*HTTP 404"):
        ensure(runner.models, model)
    assert not (models_dir / "loras/gone.safetensors").exists()


def test_a_cut_mid_file_resumes_with_a_range(
    runner: Runner, server: ModelServer, models_dir: Path
) -> None:
    """A connection cut mid-file is retried from where it stopped (Range), not from 0."""
    data = os.urandom(2_000_000)
    model = declare(server, "cut.safetensors", data)
    server.cut_after["/cut.safetensors"] = [700_000]
    outcomes, _ = ensure(runner.models, model)
    assert (models_dir / "checkpoints/cut.safetensors").read_bytes() == data
    ranges = [r for p, r, _ in server.requests if p == "/cut.safetensors"]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    assert outcomes[0].downloaded is not None and outcomes[0].downloaded.resumed_from > 0


def test_a_source_without_ranges_starts_over(
    runner: Runner, server: ModelServer, models_dir: Path
) -> None:
    """A partial file and a server that ignores Range: the download restarts at 0."""
    data = os.urandom(500_000)
    model = declare(server, "nr.safetensors", data)
    (models_dir / "checkpoints").mkdir()
    (models_dir / "checkpoints/.nr.safetensors.part").write_bytes(b"junk" * 1000)
    server.no_ranges = True
    ensure(runner.models, model)
    assert (models_dir / "checkpoints/nr.safetensors").read_bytes() == data


def test_two_tasks_racing_download_once(
    runner: Runner, server: ModelServer, models_dir: Path
) -> None:
    """Two tasks needing one missing file: one GET; both see it present afterwards."""
    data = os.urandom(1_000_000)
    model = declare(server, "race.safetensors", data)
    server.hold_after["/race.safetensors"] = 100_000
    results: list[list[Outcome]] = []

    def task() -> None:
        results.append(ensure(runner.models, model)[0])

    threads = [threading.Thread(target=task) for _ in range(2)]
    for thread in threads:
        thread.start()
    wait_until(lambda: server.gets("race.safetensors") == 1)
    server.released.set()
    for thread in threads:
        thread.join(30)
    assert server.gets("race.safetensors") == 1
    assert sorted(r[0].downloaded is not None for r in results) == [False, True]


def test_a_private_address_needs_the_allow_list(
    comfy: FakeComfyUI, tmp_path: Path, models_dir: Path, server: ModelServer
) -> None:
    """The SSRF rules apply: 127.0.0.1 is refused unless COMFYUI_MODELS_URL_ALLOW lists it."""
    settings = settings_for(comfy, tmp_path, models_dir, COMFYUI_MODELS_URL_ALLOW="")
    model = declare(server, "x.safetensors", b"x")
    with Runner(settings) as runner, pytest.raises(InvalidWorkflowError) as caught:
        ensure(runner.models, model)
    assert "COMFYUI_MODELS_URL_ALLOW" in caught.value.message and server.requests == []


def test_the_token_goes_only_to_its_hosts(
    comfy: FakeComfyUI, tmp_path: Path, models_dir: Path, server: ModelServer
) -> None:
    """COMFYUI_MODELS_TOKEN is sent to COMFYUI_MODELS_TOKEN_HOSTS only, never logged."""
    first = declare(server, "a.safetensors", b"a")
    second = declare(server, "b.safetensors", b"b")
    plain = settings_for(comfy, tmp_path, models_dir, COMFYUI_MODELS_TOKEN="hf_secret")
    with Runner(plain) as runner:
        ensure(runner.models, first)
    hosts = "127.0.0.1"
    trusted = settings_for(
        comfy,
        tmp_path,
        models_dir,
        COMFYUI_MODELS_TOKEN="hf_secret",
        COMFYUI_MODELS_TOKEN_HOSTS=hosts,
    )
    with Runner(trusted) as runner:
        ensure(runner.models, second)
    auth = {path: header for path, _, header in server.requests}
    assert auth == {"/a.safetensors": None, "/b.safetensors": "Bearer hf_secret"}
    assert "hf_secret" not in repr(trusted)


def test_a_redirect_to_another_host_is_followed_without_the_token(
    comfy: FakeComfyUI, tmp_path: Path, models_dir: Path, server: ModelServer
) -> None:
    """A hub's redirect to its CDN: followed (each hop checked), the token left behind."""
    data = b"r" * 5000
    sha = server.add("cdn.safetensors", data)
    server.redirects["/resolve"] = server.url("cdn.safetensors")  # 127.0.0.1: another host
    settings = settings_for(
        comfy,
        tmp_path,
        models_dir,
        COMFYUI_MODELS_TOKEN="hf_secret",
        COMFYUI_MODELS_TOKEN_HOSTS="localhost",
    )
    url = server.url("resolve").replace("127.0.0.1", "localhost")
    model = ModelDecl(folder="loras", name="r.safetensors", url=url, sha256=sha)
    sources = Sources(settings, resolver=lambda host, port: ["127.0.0.1"])  # localhost, pinned
    with ComfyClient(settings) as client:
        ensure(ModelEnsurer(settings, client, sources=sources), model)
    assert (models_dir / "loras/r.safetensors").read_bytes() == data
    auth = [(path, header) for path, _, header in server.requests]
    assert auth == [("/resolve", "Bearer hf_secret"), ("/cdn.safetensors", None)]


def test_least_recently_used_downloads_are_evicted_and_others_never(
    comfy: FakeComfyUI, tmp_path: Path, models_dir: Path, server: ModelServer
) -> None:
    """Over COMFYUI_MODELS_MAX_BYTES the oldest download goes; a hand-copied file stays."""
    settings = settings_for(comfy, tmp_path, models_dir, COMFYUI_MODELS_MAX_BYTES="250")
    (models_dir / "loras").mkdir()
    (models_dir / "loras/mine.safetensors").write_bytes(b"m" * 1000)
    a, b, c = (declare(server, f"{n}.safetensors", n.encode() * 100) for n in "abc")
    with Runner(settings) as runner:
        ensure(runner.models, a)
        ensure(runner.models, b)
        ensure(runner.models, a)  # a is used again: b is now the least recently used
        ensure(runner.models, c)
    names = sorted(p.name for p in (models_dir / "checkpoints").iterdir())
    assert names == ["a.safetensors", "c.safetensors"]
    assert (models_dir / "loras/mine.safetensors").exists()
    assert set(Ledger(models_dir).entries()) == {
        "checkpoints/a.safetensors",
        "checkpoints/c.safetensors",
    }


def test_a_model_in_use_is_not_evicted(
    comfy: FakeComfyUI, tmp_path: Path, models_dir: Path, server: ModelServer
) -> None:
    """A model held by a running task stays; what cannot fit then is model-storage-failed."""
    settings = settings_for(comfy, tmp_path, models_dir, COMFYUI_MODELS_MAX_BYTES="150")
    a, b = (declare(server, f"{n}.safetensors", n.encode() * 100) for n in "ab")
    with Runner(settings) as runner, runner.models.ensured([a], lambda _: None):
        with pytest.raises(ModelStorageError, match="held by tasks that use them"):
            ensure(runner.models, b)
        assert (models_dir / "checkpoints/a.safetensors").exists()
    with Runner(settings) as runner:  # once a's task is done, b evicts it
        ensure(runner.models, b)
    assert not (models_dir / "checkpoints/a.safetensors").exists()


def test_no_free_space_is_a_storage_error_naming_the_path(
    runner: Runner, server: ModelServer, models_dir: Path, tmp_path: Path
) -> None:
    """A file larger than the free space fails before any byte is written."""
    huge = tmp_path / "served/huge.safetensors"
    with open(huge, "wb") as handle:
        handle.truncate(2**40)  # sparse: 1 TiB announced
    model = ModelDecl(
        folder="checkpoints",
        name="huge.safetensors",
        url=server.url("huge.safetensors"),
        sha256="b" * 64,
    )
    with pytest.raises(ModelStorageError, match="not enough space") as caught:
        ensure(runner.models, model)
    assert caught.value.details["path"] == str(models_dir / "checkpoints/huge.safetensors")
    assert list((models_dir / "checkpoints").iterdir()) == []


def test_without_a_models_dir_a_missing_model_says_so(
    comfy: FakeComfyUI, tmp_path: Path, server: ModelServer
) -> None:
    """No COMFYUI_MODELS_DIR: a model ComfyUI lacks is a technical error saying why."""
    settings = make_settings(comfy.base_url, tmp_path / "out")
    model = declare(server, "x.safetensors", b"x")
    with Runner(settings) as runner, pytest.raises(ModelStorageError, match="COMFYUI_MODELS_DIR"):
        ensure(runner.models, model)


def test_a_models_dir_comfyui_does_not_read_is_named(
    comfy: FakeComfyUI, tmp_path: Path, server: ModelServer
) -> None:
    """Downloaded where ComfyUI does not look: model-storage-failed says which directory."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    model = declare(server, "lost.safetensors", b"l" * 100)
    with (
        Runner(settings_for(comfy, tmp_path, elsewhere)) as runner,
        pytest.raises(ModelStorageError, match="ComfyUI does not list it"),
    ):
        ensure(runner.models, model)
    with (
        Runner(settings_for(comfy, tmp_path, tmp_path / "typo")) as runner,
        pytest.raises(ModelStorageError, match="typo does not exist"),
    ):
        ensure(runner.models, model)


def task_with_model(model: ModelDecl) -> dict[str, Any]:
    return {
        "template": "txt2img_sdxl",
        "params": {"prompt": "a lighthouse"},
        "overrides": {"4.ckpt_name": model.name},
        "models": [model.model_dump(exclude_none=True)],
    }


def test_a_task_declaring_its_checkpoint_runs_after_the_download(
    runner: Runner, settings: ComfySettings, server: ModelServer, comfy: FakeComfyUI
) -> None:
    """Ensured before preflight: the refreshed /object_info lists the new checkpoint."""
    model = declare(server, "fresh.safetensors", b"weights" * 1000)
    runner.submitter.object_info.check({})  # /object_info cached without the file
    request = TaskPreparer(settings).request(task_with_model(model), Identity("p1", "r1"))
    trail: list[str] = []
    result = runner.run(request, trail=trail.append)
    assert result.status == "success"
    assert trail[0].startswith("model fresh.safetensors: downloaded")


def test_a_queued_task_fetches_its_models_while_the_current_one_runs(
    runner: Runner,
    settings: ComfySettings,
    server: ModelServer,
    comfy: FakeComfyUI,
    models_dir: Path,
) -> None:
    """A task waiting its turn fetches its models during the current task's execution."""
    preparer = TaskPreparer(settings)
    sleeping = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "FakeSleep", "inputs": {"seconds": 60, "value": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "s"}},
    }
    first = preparer.request(sleeping, Identity(str(_uuid(1)), "r1"))
    model = declare(server, "next.safetensors", b"n" * 10_000)
    second = preparer.request(task_with_model(model), Identity(str(_uuid(2)), "r2"))
    outcomes: list[str] = []

    def run(request: RunRequest) -> None:
        try:
            outcomes.append(runner.run(request).status)
        except ComfyWorkerError as exc:
            outcomes.append(exc.name)

    threads = [threading.Thread(target=run, args=(r,)) for r in (first, second)]
    threads[0].start()
    wait_until(lambda: first.prompt_id in comfy.started_times)
    threads[1].start()
    wait_until((models_dir / "checkpoints/next.safetensors").exists)
    assert first.prompt_id not in comfy.finish_times  # downloaded while task 1 ran
    runner.client.interrupt(first.prompt_id)
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["execution-interrupted", "success"]


def _uuid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def test_the_ledger_survives_as_json(models_dir: Path) -> None:
    """The ledger is a small JSON file in the models directory."""
    Ledger(models_dir).record("vae/v.safetensors", 10, "c" * 64)
    raw = json.loads((models_dir / ".comfyui-worker/models.json").read_text())
    assert raw["files"]["vae/v.safetensors"]["size_bytes"] == 10
    assert hashlib.sha256(b"").hexdigest() not in raw


def test_the_warm_up_fetches_its_models_before_running(
    runner: Runner, settings: ComfySettings, server: ModelServer, comfy: FakeComfyUI, tmp_path: Path
) -> None:
    """WORKER_WARMUP_WORKFLOW with _models: the models are in place before its prompt runs."""
    model = declare(server, "warm.safetensors", b"w" * 5000)
    template = json.loads((WORKFLOWS / "smoke.json").read_text())
    template["_models"] = [model.model_dump(exclude_none=True)]
    source = tmp_path / "warm.json"
    source.write_text(json.dumps(template))
    WarmUp(runner, TaskPreparer(settings), str(source)).once()
    assert "warm.safetensors" in comfy.installed("checkpoints") and len(comfy.executed) == 1
    assert server.gets("warm.safetensors") == 1


def test_a_full_disk_mid_download_keeps_no_half_file(
    comfy: FakeComfyUI, tmp_path: Path, tiny_fs: Path, server: ModelServer
) -> None:
    """No size known in advance and the disk fills: model-storage-failed naming the path, no file."""
    model = declare(server, "full.safetensors", os.urandom(1_000_000))
    server.unsized.add("/full.safetensors")
    settings = settings_for(comfy, tmp_path, tiny_fs)
    with Runner(settings) as runner, pytest.raises(ModelStorageError) as caught:
        ensure(runner.models, model)
    assert caught.value.details["errno"] == "ENOSPC"
    assert str(tiny_fs / "checkpoints") in caught.value.message
    assert list((tiny_fs / "checkpoints").iterdir()) == []


def test_the_drain_cuts_a_download_and_hands_the_task_back(
    runner: Runner, server: ModelServer, models_dir: Path
) -> None:
    """interrupt(): the download in flight stops as worker-shutting-down; the partial stays."""
    model = declare(server, "drain.safetensors", os.urandom(2_000_000))
    server.hold_after["/drain.safetensors"] = 500_000
    failures: list[ComfyWorkerError] = []

    def task() -> None:
        try:
            ensure(runner.models, model)
        except ComfyWorkerError as exc:
            failures.append(exc)

    thread = threading.Thread(target=task)
    thread.start()
    partial = models_dir / "checkpoints/.drain.safetensors.part"
    wait_until(lambda: partial.exists() and partial.stat().st_size >= 500_000)
    runner.models.interrupt()
    thread.join(30)
    assert [f.name for f in failures] == ["worker-shutting-down"]
    assert not (models_dir / "checkpoints/drain.safetensors").exists() and partial.exists()


@pytest.mark.slow
def test_a_source_that_stalls_fails_as_a_retried_technical_error(
    comfy: FakeComfyUI, tmp_path: Path, models_dir: Path, server: ModelServer
) -> None:
    """A drip that stops: each try times out (COMFYUI_HTTP_TIMEOUT_SEC), then model-source-failed."""
    model = declare(server, "stall.safetensors", os.urandom(1_000_000))
    server.hold_after["/stall.safetensors"] = 300_000
    settings = settings_for(comfy, tmp_path, models_dir, COMFYUI_HTTP_TIMEOUT_SEC="0.5")
    with Runner(settings) as runner, pytest.raises(ComfyWorkerError) as caught:
        ensure(runner.models, model)
    assert caught.value.name == "model-source-failed" and not caught.value.business
    assert not (models_dir / "checkpoints/stall.safetensors").exists()
    assert server.gets("stall.safetensors") == settings.http_retries + 1


@pytest.mark.slow
def test_a_slow_drip_is_cut_by_the_download_deadline(
    comfy: FakeComfyUI, tmp_path: Path, models_dir: Path, server: ModelServer
) -> None:
    """A source that trickles forever cannot hold the slot: one deadline for every try."""
    model = declare(server, "drip.safetensors", os.urandom(4_000_000))
    server.drip_s["/drip.safetensors"] = 0.01
    settings = settings_for(comfy, tmp_path, models_dir, COMFYUI_MODELS_TIMEOUT_SEC="1")
    with Runner(settings) as runner, pytest.raises(ComfyWorkerError) as caught:
        ensure(runner.models, model)
    assert caught.value.name == "model-source-failed"
    assert "COMFYUI_MODELS_TIMEOUT_SEC" in caught.value.message
    assert not (models_dir / "checkpoints/drip.safetensors").exists()
    assert (models_dir / "checkpoints/.drip.safetensors.part").stat().st_size > 0
