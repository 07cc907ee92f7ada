"""The execution loop end to end against the fake ComfyUI (real HTTP + WebSocket)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfyui_worker.errors import (
    ComfyOutOfMemoryError,
    ExecutionFailedError,
    ExecutionInterruptedError,
    ExecutionTimeoutError,
    InvalidWorkflowError,
    OutputRejectedError,
    PromptVanishedError,
)
from comfyui_worker.outputs.collect import OutputRef
from comfyui_worker.outputs.download import Downloader
from comfyui_worker.outputs.store import LocalStore
from comfyui_worker.run.execution import Runner
from comfyui_worker.run.fencing import Started, Submission
from comfyui_worker.settings import ComfySettings
from comfyui_worker.workflow.request import RunRequest
from fakes.comfyui import FakeComfyUI
from tests.conftest import RecordedFence, make_request, make_settings, recorded, wait_until
from tests.graphs import smoke


def multi() -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 2, "color": 65280},
        },
        "2": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": "sample/still"},
        },
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        "4": {"class_type": "FakeText", "inputs": {"value": "a caption"}},
    }


def big(size_bytes: int) -> dict[str, Any]:
    return {
        "1": {
            "class_type": "FakeBigOutput",
            "inputs": {"size_bytes": size_bytes, "filename_prefix": "big/out"},
        }
    }


def request(graph: dict[str, Any], **kw: Any) -> RunRequest:
    return make_request(graph, **kw)


def sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- 1. local validation ----------------------------------------------------------


def test_ui_format_is_rejected_before_anything_is_sent(runner: Runner, comfy: FakeComfyUI):
    """A UI-format export gets an 'export in API format' error and never reaches ComfyUI."""
    with pytest.raises(InvalidWorkflowError, match="API"):
        runner.run(request({"nodes": [], "links": [], "version": 0.4}))
    assert comfy.submitted == []


def test_non_graph_is_rejected_locally(runner: Runner, comfy: FakeComfyUI):
    """A node without class_type is named in the error; ComfyUI never sees a non-graph."""
    with pytest.raises(InvalidWorkflowError, match="node '2'"):
        runner.run(request({"1": {"class_type": "EmptyImage", "inputs": {}}, "2": {"inputs": {}}}))
    assert comfy.submitted == []


# --- 2. submit with the caller's prompt id; 6./7. download and result ----------------


def test_smoke_run_saves_outputs_and_returns_the_result(
    runner: Runner, comfy: FakeComfyUI, settings: ComfySettings
):
    """A success saves every file with sha256, writes the manifest and fills the result."""
    prompt_id = str(uuid.uuid4())
    result = runner.run(request(smoke(), prompt_id=prompt_id, run_key="runs/one"))
    assert comfy.submitted == [prompt_id] and result.prompt_id == prompt_id
    [out] = result.outputs
    assert out.node_id == "3" and out.key == "images" and out.comfy_type == "output"
    assert out.path == str(
        Path(settings.output_location) / "runs/one" / out.subfolder / out.filename
    )
    assert out.size_bytes == Path(out.path).stat().st_size and out.sha256 == sha(out.path)
    assert out.media_type == "image/png"
    assert set(result.timings_ms.model_dump()) == {
        "queued",
        "executing",
        "downloading",
        "total",
        "comfy_execution",
    }
    assert result.comfyui.model_dump() == {"base_url": comfy.base_url, "version": "0.3.64"}
    manifest = json.loads(Path(result.manifest).read_text())
    assert manifest["outputs"] == result.manifest_json()["outputs"] and "created_at" in manifest
    assert len(json.dumps(result.to_json())) < 10_000


def test_every_output_key_is_downloaded_and_temp_skipped(runner: Runner):
    """Images are saved, temp previews skipped by default, text kept in the result."""
    result = runner.run(request(multi()))
    files = sorted((o.node_id, o.subfolder, o.filename) for o in result.outputs)
    assert files == [("2", "sample", "still_00001_.png"), ("2", "sample", "still_00002_.png")]
    assert result.skipped_temp_outputs == 2
    assert result.text == {"4": ["a caption"]}


def test_temp_previews_are_saved_when_configured(comfy: FakeComfyUI, tmp_path: Path):
    """COMFYUI_INCLUDE_TEMP_OUTPUTS saves previews under temp/."""
    settings = make_settings(comfy.base_url, tmp_path / "out", COMFYUI_INCLUDE_TEMP_OUTPUTS="true")
    with Runner(settings) as r:
        result = r.run(request(multi(), run_key="r"))
    temps = [o for o in result.outputs if o.comfy_type == "temp"]
    assert len(temps) == 2 and all(o.relative_path.startswith("temp/") for o in temps)
    assert all(Path(o.path).is_file() for o in temps)


def test_cached_rerun_downloads_the_same_files_again(runner: Runner, comfy: FakeComfyUI):
    """A fully cached re-run points at the same ComfyUI files; both runs keep full copies."""
    first = runner.run(request(smoke(color=7)))
    second = runner.run(request(smoke(color=7)))
    assert [o.filename for o in first.outputs] == [o.filename for o in second.outputs]
    assert first.outputs[0].path != second.outputs[0].path
    assert first.outputs[0].sha256 == second.outputs[0].sha256
    comfy_file = comfy.root / "output" / first.outputs[0].subfolder / first.outputs[0].filename
    assert comfy_file.is_file()  # ComfyUI's own file was neither moved nor deleted


def test_large_output_streams_to_disk(runner: Runner):
    """A 64 MiB output arrives whole, with the right hash, and no temp file remains."""
    size = 64 * 1024 * 1024
    result = runner.run(request(big(size)))
    [out] = result.outputs
    assert out.size_bytes == size and sha(out.path) == out.sha256
    leftovers = list(Path(result.output_dir).rglob("*.part"))
    assert leftovers == []


def test_output_over_the_size_cap_is_rejected(comfy: FakeComfyUI, tmp_path: Path):
    """COMFYUI_MAX_OUTPUT_BYTES stops the download with output-rejected and no partial file."""
    settings = make_settings(comfy.base_url, tmp_path / "out", COMFYUI_MAX_OUTPUT_BYTES="1000")
    with (
        Runner(settings) as r,
        pytest.raises(OutputRejectedError, match="COMFYUI_MAX_OUTPUT_BYTES"),
    ):
        r.run(request(big(5000), run_key="capped"))
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []


def test_view_5xx_burst_is_retried(runner: Runner, comfy: FakeComfyUI):
    """Two 503s from /view are retried and the file still arrives."""
    comfy.fail_requests("GET", "/view", count=2, status=503)
    result = runner.run(request(smoke(color=9)))
    assert Path(result.outputs[0].path).is_file()


# --- 3. waiting: WebSocket, fallback, race, vanished ---------------------------------


def test_completion_is_detected_quickly_over_the_websocket(runner: Runner, comfy: FakeComfyUI):
    """With the socket up the worker learns of completion within milliseconds, not a poll interval."""
    runner.run(request(smoke(color=1)))  # warm up: socket connected
    comfy.execution_time_s = 0.3
    prompt_id = str(uuid.uuid4())
    runner.run(request(smoke(color=2), prompt_id=prompt_id))
    lag_s = time.monotonic() - comfy.finish_times[prompt_id]
    assert lag_s < 5.0  # sanity; the latency itself is measured by the benchmark
    assert runner.events.connected


@pytest.mark.slow  # a second or more of real waiting
def test_polling_fallback_when_websocket_is_refused(comfy: FakeComfyUI, settings: ComfySettings):
    """With /ws refused, polling every COMFYUI_POLL_INTERVAL_SEC still finds completion."""
    comfy.websocket_enabled = False
    comfy.execution_time_s = 0.3
    settings = settings.model_copy(update={"http_timeout_s": 0.5})  # the start-up socket wait
    with Runner(settings) as r:
        result = r.run(request(smoke(color=3)))
        assert not r.events.connected
    assert result.status == "success"


def test_websocket_drop_mid_execution_never_misses_completion(runner: Runner, comfy: FakeComfyUI):
    """Dropping every socket while the prompt runs still ends in success (reconnect + poll)."""
    comfy.execution_time_s = 0.6
    threading.Timer(0.2, comfy.drop_websockets).start()
    result = runner.run(request(smoke(color=4)))
    assert result.status == "success"


def test_history_lagging_behind_the_websocket_is_handled(runner: Runner, comfy: FakeComfyUI):
    """execution_success before /history holds the entry (the documented race) still succeeds."""
    comfy.history_delay_s = 0.05
    result = runner.run(request(smoke(color=5)))
    assert result.status == "success"


@pytest.mark.slow  # a second or more of real waiting
def test_restart_that_forgets_the_prompt_fails_as_vanished(runner: Runner, comfy: FakeComfyUI):
    """A ComfyUI restart mid-run is detected within a few poll intervals as retryable."""
    comfy.execution_time_s = 30
    threading.Timer(0.3, comfy.restart).start()
    started = time.monotonic()
    with pytest.raises(PromptVanishedError) as info:
        runner.run(request(smoke(color=6)))
    assert not info.value.business
    assert time.monotonic() - started < 0.3 + 6 * 0.2 + 2


# --- 4. deadline -------------------------------------------------------------------


@pytest.mark.slow  # a second or more of real waiting
def test_deadline_interrupts_a_running_prompt(comfy: FakeComfyUI, tmp_path: Path):
    """Past COMFYUI_HISTORY_TIMEOUT_SEC the running prompt is interrupted: GPU freed, retryable error."""
    comfy.execution_time_s = 3  # 1 s per node: the interrupt lands at the next node boundary
    settings = make_settings(
        comfy.base_url, tmp_path, COMFYUI_HISTORY_TIMEOUT_SEC="0.5", COMFYUI_POLL_INTERVAL_SEC="0.2"
    )
    prompt_id = str(uuid.uuid4())
    with Runner(settings) as r, pytest.raises(ExecutionTimeoutError, match="interrupted") as info:
        r.run(request(smoke(color=8), prompt_id=prompt_id))
    assert not info.value.business
    wait_until(lambda: prompt_id in comfy.interrupted, timeout_s=5)


def test_deadline_deletes_a_pending_prompt(comfy: FakeComfyUI, tmp_path: Path):
    """A prompt still queued at the deadline is deleted from ComfyUI's queue."""
    comfy.pause()
    settings = make_settings(
        comfy.base_url, tmp_path, COMFYUI_HISTORY_TIMEOUT_SEC="0.5", COMFYUI_POLL_INTERVAL_SEC="0.2"
    )
    prompt_id = str(uuid.uuid4())
    with Runner(settings) as r, pytest.raises(ExecutionTimeoutError, match="deleted"):
        r.run(request(smoke(color=10), prompt_id=prompt_id))
    assert prompt_id in comfy.deleted


# --- 5. outcomes ---------------------------------------------------------------------


def test_execution_error_names_the_node(runner: Runner):
    """A node raising in ComfyUI gives node id, type, exception type and message."""
    graph = smoke(prefix="../../escape")
    with pytest.raises(ExecutionFailedError) as info:
        runner.run(request(graph))
    details = info.value.details
    assert (details["node_id"], details["node_type"], details["exception_type"]) == (
        "3",
        "SaveImage",
        "Exception",
    )
    assert "outside the output folder" in details["exception_message"]
    assert info.value.business


def test_out_of_memory_is_retryable(runner: Runner, comfy: FakeComfyUI):
    """A torch OutOfMemoryError is a technical failure, not the workflow's fault."""
    comfy.fail_node(
        "ImageBlur", exception_type="torch.OutOfMemoryError", message="Allocation on device"
    )
    with pytest.raises(ComfyOutOfMemoryError) as info:
        runner.run(request(smoke(color=11)))
    assert not info.value.business and info.value.details["node_id"] == "2"


def test_external_interrupt_is_its_own_error(runner: Runner, comfy: FakeComfyUI):
    """Someone pressing interrupt in ComfyUI gives execution-interrupted."""
    comfy.execution_time_s = 1.5  # 0.5 s per node: the interrupt lands at the next one
    prompt_id = str(uuid.uuid4())

    def interrupt_once_started(kind: str, data: dict[str, Any]) -> None:
        if kind == "execution_start":
            httpx.post(f"{comfy.base_url}/interrupt", json={"prompt_id": prompt_id})

    with pytest.raises(ExecutionInterruptedError):
        runner.run(request(smoke(color=12), prompt_id=prompt_id), on_event=interrupt_once_started)


def test_comfy_400_lists_failing_nodes(comfy: FakeComfyUI, tmp_path: Path):
    """With preflight off, ComfyUI's own 400 is turned into a readable per-node error."""
    settings = make_settings(comfy.base_url, tmp_path, COMFYUI_PREFLIGHT="false")
    graph = {
        "1": {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": "missing.safetensors"},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    with (
        Runner(settings) as r,
        pytest.raises(InvalidWorkflowError, match=r"node 2 \(SaveImage\): Return type mismatch"),
    ):
        r.run(request(graph))


def test_preflight_catches_a_missing_model_before_submitting(runner: Runner, comfy: FakeComfyUI):
    """A checkpoint ComfyUI does not have fails fast with the available names."""
    graph = {
        "1": {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": "sd_xl_base_1.1.safetensors"},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    with pytest.raises(InvalidWorkflowError, match=r"sd_xl_base_1\.0\.safetensors"):
        runner.run(request(graph))
    assert comfy.submitted == []


# --- no GPU work twice ---------------------------------------------------------------


def test_earlier_running_prompt_is_adopted_not_resubmitted(runner: Runner, comfy: FakeComfyUI):
    """A prompt from an earlier attempt that is still running is waited for, not re-queued."""
    comfy.execution_time_s = 0.5
    earlier = str(uuid.uuid4())
    import httpx

    httpx.post(f"{comfy.base_url}/prompt", json={"prompt": smoke(color=13), "prompt_id": earlier})
    fence = RecordedFence(recorded(comfy.base_url, earlier, smoke(color=13)))
    result = runner.run(request(smoke(color=13)), fence=fence)
    assert result.prompt_id == earlier and comfy.submitted == [earlier]
    assert comfy.executed == [earlier] and fence.recorded == []


def test_earlier_success_is_downloaded_without_rerunning(runner: Runner, comfy: FakeComfyUI):
    """A prompt that already succeeded is only downloaded; files already saved are reused."""
    first = runner.run(request(smoke(color=14), run_key="task"))
    fence = RecordedFence(recorded(comfy.base_url, first.prompt_id, smoke(color=14)))
    again = runner.run(request(smoke(color=14), run_key="task"), fence=fence)
    assert again.prompt_id == first.prompt_id and comfy.submitted == [first.prompt_id]
    assert [o.reused for o in again.outputs] == [True]


def test_a_first_attempt_never_looks_for_an_earlier_prompt(runner: Runner, comfy: FakeComfyUI):
    """A fresh request (first attempt, new id) is submitted with no adoption look first."""
    runner.run(request(smoke(color=15), run_key="task"))
    since = len(comfy.requests)
    runner.run(request(smoke(color=15), run_key="task", fresh=True))
    second = comfy.requests[since:]
    before_post = second[: second.index(("POST", "/prompt"))]
    assert [p for _, p in before_post if p == "/queue" or p.startswith("/history")] == []


@pytest.mark.parametrize("may_reuse", [True, False])
def test_an_earlier_copy_is_reused_only_where_one_may_exist(
    comfy: FakeComfyUI, settings: ComfySettings, tmp_path: Path, may_reuse: bool
):
    """A first attempt's downloader does not ask the store for a copy (an S3 HEAD each)."""
    (comfy.root / "output" / "kept.png").write_bytes(b"\x89PNG kept")
    ref = OutputRef("9", "images", "kept.png", "", "output")
    with Runner(settings) as runner:
        for reuse in (True, may_reuse):
            store = LocalStore(tmp_path / "out", fsync=False).run("r")
            downloader = Downloader(runner.client, store, max_bytes=10**6, may_reuse=reuse)
            [saved] = downloader.save_all([ref])
    assert saved.reused is may_reuse
    assert comfy.requests.count(("GET", "/view")) == (1 if may_reuse else 2)


def test_an_earlier_prompt_holding_another_graph_is_never_adopted(
    runner: Runner, comfy: FakeComfyUI
):
    """A recorded prompt id whose graph in ComfyUI is not the recorded one is run afresh."""
    other = str(uuid.uuid4())
    httpx.post(f"{comfy.base_url}/prompt", json={"prompt": smoke(color=20), "prompt_id": other})
    comfy.wait_idle()
    fence = RecordedFence(recorded(comfy.base_url, other, smoke(color=21)))
    result = runner.run(request(smoke(color=21)), fence=fence)
    assert result.prompt_id != other and comfy.submitted == [other, result.prompt_id]
    assert [s.prompt_id for s in fence.recorded] == [result.prompt_id]


def test_an_older_history_entry_under_our_prompt_id_is_not_our_result(
    runner: Runner, comfy: FakeComfyUI
):
    """ComfyUI serves an old entry for a reused id while ours waits queued: we wait for ours."""
    reused = str(uuid.uuid4())
    first = runner.run(request(smoke(color=22), prompt_id=reused))
    comfy.pause()
    since = len(comfy.requests)
    done: list[Any] = []
    thread = threading.Thread(
        target=lambda: done.append(runner.run(request(smoke(color=23), prompt_id=reused)))
    )
    thread.start()
    looked = ("GET", f"/history/{reused}")
    wait_until(lambda: comfy.submitted.count(reused) == 2 and looked in comfy.requests[since:])
    comfy.resume()
    thread.join(30)
    [second] = done
    assert comfy.executed == [reused, reused]
    assert second.outputs[0].sha256 != first.outputs[0].sha256  # color 23, not 22


def test_earlier_failure_is_submitted_afresh(runner: Runner, comfy: FakeComfyUI):
    """An earlier attempt that failed (e.g. out of memory) is run again under the new id."""
    comfy.fail_node(
        "ImageBlur", exception_type="torch.OutOfMemoryError", message="Allocation on device"
    )
    earlier = str(uuid.uuid4())
    with pytest.raises(ComfyOutOfMemoryError):
        runner.run(request(smoke(color=15), prompt_id=earlier))
    comfy.clear_failures()
    fence = RecordedFence(recorded(comfy.base_url, earlier, smoke(color=15)))
    result = runner.run(request(smoke(color=15)), fence=fence)
    assert result.prompt_id != earlier and len(comfy.submitted) == 2


def test_huge_output_lists_are_cut_in_the_result_not_the_manifest(runner: Runner):
    """A result over the size budget keeps a prefix of outputs and says how many there are."""
    result = runner.run(request(smoke(color=18)))
    output = result.outputs[0]
    many = result.model_copy(
        update={
            "outputs": [output.model_copy(update={"filename": f"f{i:05}.png"}) for i in range(5000)]
        }
    )
    bounded = many.to_json(limit_bytes=100_000)
    assert bounded["outputs_truncated"] and bounded["outputs_total"] == 5000
    assert 0 < len(bounded["outputs"]) < 5000 and len(json.dumps(bounded)) <= 100_000
    assert len(many.manifest_json()["outputs"]) == 5000
    assert "outputs_truncated" not in result.to_json(limit_bytes=100_000)


def test_preflight_sees_a_model_added_after_the_cache_was_filled(
    runner: Runner, comfy: FakeComfyUI
):
    """A checkpoint copied in after a failure is found: the cache is refreshed before failing."""
    graph = {
        "1": {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": "new_model.safetensors"},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    with pytest.raises(InvalidWorkflowError, match="new_model"):
        runner.run(request(graph))
    comfy.checkpoints = [*comfy.checkpoints, "new_model.safetensors"]
    with pytest.raises(InvalidWorkflowError, match="Return type mismatch"):  # now ComfyUI's own 400
        runner.run(request(graph))
    assert comfy.submitted == []


def test_lost_submit_answer_is_not_resubmitted(comfy: FakeComfyUI, tmp_path: Path):
    """POST /prompt times out but ComfyUI still queues it: the worker finds it, never submits twice."""
    comfy.delay_requests("POST", "/prompt", 0.6, after=True)
    settings = make_settings(
        comfy.base_url, tmp_path, COMFYUI_HTTP_TIMEOUT_SEC="0.3", COMFYUI_POLL_INTERVAL_SEC="0.2"
    )
    prompt_id = str(uuid.uuid4())
    with Runner(settings) as r:
        result = r.run(request(smoke(color=16), prompt_id=prompt_id))
    assert result.prompt_id == prompt_id
    assert comfy.submitted == [prompt_id]
    assert comfy.requests.count(("POST", "/prompt")) == 1


def test_submit_5xx_is_retried_once_it_is_known_not_queued(runner: Runner, comfy: FakeComfyUI):
    """A 500 from POST /prompt (nothing queued) is retried and the prompt runs once."""
    comfy.fail_requests("POST", "/prompt", count=1, status=500)
    prompt_id = str(uuid.uuid4())
    result = runner.run(request(smoke(color=17), prompt_id=prompt_id))
    assert result.status == "success" and comfy.submitted == [prompt_id]
    assert comfy.requests.count(("POST", "/prompt")) == 2


# --- hung and failing calls, memory, both ComfyUI generations -----------------------


def test_a_hung_call_fails_at_the_overall_deadline(comfy: FakeComfyUI, tmp_path: Path):
    """A GET that never answers is tried within COMFYUI_HTTP_DEADLINE_SEC, not retries x timeout."""
    from comfyui_worker.comfy.client import ComfyClient
    from comfyui_worker.errors import ComfyUnavailableError

    comfy.hang_requests("GET", "/queue", count=100)
    settings = make_settings(
        comfy.base_url,
        tmp_path,
        COMFYUI_HTTP_TIMEOUT_SEC="0.4",
        COMFYUI_HTTP_DEADLINE_SEC="0.6",
        COMFYUI_HTTP_RETRIES="10",
    )
    with ComfyClient(settings) as client, pytest.raises(ComfyUnavailableError):
        client.queue()
    assert 1 <= comfy.requests.count(("GET", "/queue")) <= 2


def test_a_failing_system_stats_never_fails_a_task(runner: Runner, comfy: FakeComfyUI):
    """The version is learned at start; a /system_stats outage later does not touch tasks."""
    runner.learn_server()
    comfy.fail_requests("GET", "/system_stats", count=100, status=500)
    result = runner.run(request(smoke(color=30)))
    assert result.comfyui.version == "0.3.64"
    assert comfy.requests.count(("GET", "/system_stats")) == 1


@pytest.mark.slow  # a second or more of real waiting
def test_a_5xx_burst_while_the_prompt_runs_is_ridden_out(runner: Runner, comfy: FakeComfyUI):
    """/history and /queue answering 503 for a while do not fail a healthy generation."""
    comfy.execution_time_s = 0.6
    runner.run(request(smoke(color=31)))  # socket connected, server facts learned

    armed_at: list[int] = []

    def burst_once_running(kind: str, data: dict[str, Any]) -> None:
        if kind == "execution_start":
            armed_at.append(len(comfy.requests))
            comfy.fail_requests("GET", "/history/*", count=25, status=503)
            comfy.fail_requests("GET", "/queue", count=25, status=503)

    result = runner.run(request(smoke(color=32)), on_event=burst_once_running)
    assert result.status == "success"
    later = comfy.requests[armed_at[0] :]
    assert sum(1 for method, path in later if path.startswith("/history/")) > 25


def test_out_of_memory_frees_comfyui_memory(runner: Runner, comfy: FakeComfyUI):
    """After an out-of-memory failure the worker POSTs /free before the next attempt."""
    comfy.fail_node(
        "ImageBlur", exception_type="torch.OutOfMemoryError", message="CUDA out of memory"
    )
    with pytest.raises(ComfyOutOfMemoryError):
        runner.run(request(smoke(color=33)))
    assert comfy.free_calls == [{"unload_models": True, "free_memory": True}]


def test_memory_is_freed_every_n_tasks_when_asked(comfy: FakeComfyUI, tmp_path: Path):
    """COMFYUI_FREE_MEMORY_EVERY=2 frees ComfyUI's memory after every second task."""
    settings = make_settings(comfy.base_url, tmp_path, COMFYUI_FREE_MEMORY_EVERY="2")
    with Runner(settings) as r:
        for color in (34, 35, 36):
            r.run(request(smoke(color=color)))
    assert len(comfy.free_calls) == 1


@pytest.fixture
def new_comfy(tmp_path: Path):
    """A fake of the newest ComfyUI (canonical prompt ids only, the jobs API)."""
    fake = FakeComfyUI(tmp_path / "new-comfy", version="0.38.0").start()
    try:
        yield fake
    finally:
        fake.stop()


def test_the_newest_comfyui_runs_the_same_tasks(new_comfy: FakeComfyUI, tmp_path: Path):
    """Against a 0.38 server the worker learns the jobs API and a run succeeds."""
    new_comfy.execution_time_s = 0.5  # long enough that the waiter checks liveness
    settings = make_settings(new_comfy.base_url, tmp_path / "out", COMFYUI_POLL_INTERVAL_SEC="0.1")
    with Runner(settings) as r:
        result = r.run(request(smoke(color=37)))
        server = r.known_server()
        assert server.jobs_api and server.version == "0.38.0"
    assert result.status == "success" and new_comfy.executed == [result.prompt_id]
    assert ("GET", f"/api/jobs/{result.prompt_id}") in new_comfy.requests  # liveness, one call


def test_the_newest_comfyui_is_cancelled_through_the_jobs_api(
    new_comfy: FakeComfyUI, tmp_path: Path
):
    """On a server with the jobs API the deadline cancels with one atomic call."""
    new_comfy.pause()
    settings = make_settings(
        new_comfy.base_url,
        tmp_path,
        COMFYUI_HISTORY_TIMEOUT_SEC="0.5",
        COMFYUI_POLL_INTERVAL_SEC="0.2",
    )
    prompt_id = str(uuid.uuid4())
    with Runner(settings) as r, pytest.raises(ExecutionTimeoutError, match="deleted"):
        r.run(request(smoke(color=38), prompt_id=prompt_id))
    assert ("POST", f"/api/jobs/{prompt_id}/cancel") in new_comfy.requests
    assert ("POST", "/queue") not in new_comfy.requests


def test_a_started_record_is_never_read_as_a_submission():
    """Adoption reads submissions only; an older record without ``queued_behind`` still reads."""
    started = Started("p-2", attempt=0).to_json()
    assert Submission.from_json(started) is None
    old = {"comfyui_url": "http://c:8188", "prompt_id": "p-1", "worker_id": "w", "attempt": 0}
    read = Submission.from_json(old)
    assert read is not None and read.queued_behind == 0 and not read.prefetched
    behind = Submission("http://c:8188", "p-2", "w", 0, "sha", queued_behind=2)
    assert Submission.from_json(behind.to_json()) == behind and behind.prefetched


def test_the_fence_hears_when_comfyui_starts_the_prompt(comfy: FakeComfyUI, tmp_path: Path):
    """The runner tells the fence each start; a lone prompt is recorded as queued behind none."""
    fence = RecordedFence()
    with Runner(make_settings(comfy.base_url, tmp_path, WORKER_PREFETCH="1")) as runner:
        request = make_request(smoke(5), fresh=True)
        runner.run(request, fence=fence)
    [submission] = fence.recorded
    assert submission.queued_behind == 0 and fence.started_prompts == [request.prompt_id]
