"""``main.py`` as a user runs it: run, check, register, exit codes."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fakes.comfyui import FakeComfyUI
from fakes.littlehorse import FakeLittleHorse
from fakes.seaweed import SeaweedS3, running_seaweed
from tests.conftest import wait_until
from tests.graphs import PNG_1PX_BASE64
from tests.modelserver import ModelServer
from tests.outputs.test_store_open import s3_env

# `main.py` as a subprocess, a fresh interpreter each time.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def main_py(
    *args: str, env: dict[str, str], timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {"PATH": os.environ.get("PATH", ""), "WORKER_LOG_LEVEL": "warning", **env}
    return subprocess.run(
        [sys.executable, "main.py", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def comfy_env(comfy: FakeComfyUI, out: Path) -> dict[str, str]:
    return {
        "COMFYUI_BASE_URL": comfy.base_url,
        "COMFYUI_OUTPUT_DIR": str(out),
        "COMFYUI_POLL_INTERVAL_SEC": "0.2",
    }


def test_run_smoke_prints_the_result_and_progress(comfy: FakeComfyUI, tmp_path: Path):
    """`run workflows/smoke.json` exits 0, prints result JSON on stdout and progress on stderr."""
    comfy.execution_time_s = 0.3  # node events arrive before completion, as on a real GPU
    done = main_py(
        "run",
        "workflows/smoke.json",
        "--param",
        "color=255",
        env=comfy_env(comfy, tmp_path / "out"),
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "success" and result["params"]["color"] == 255
    assert Path(result["outputs"][0]["path"]).is_file()
    nodes = [line for line in done.stderr.splitlines() if line.startswith("node ")]
    assert nodes == [
        "node 1/3: 1 (EmptyImage)",
        "node 2/3: 2 (ImageBlur)",
        "node 3/3: 3 (SaveImage)",
    ]


def test_run_accepts_a_template_name(comfy: FakeComfyUI, tmp_path: Path):
    """`run smoke --param color=255` runs the template of that name from the workflows dir."""
    done = main_py("run", "smoke", "--param", "color=255", env=comfy_env(comfy, tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["template"] == "smoke"


def test_run_names_an_unknown_template_or_file(comfy: FakeComfyUI, tmp_path: Path):
    """A name that is neither a file nor a template exits 4 with a did-you-mean."""
    done = main_py("run", "smoek", env=comfy_env(comfy, tmp_path / "out"))
    assert done.returncode == 4 and "did you mean 'smoke'?" in done.stderr


def test_run_output_dir_flag_overrides_the_setting(comfy: FakeComfyUI, tmp_path: Path):
    """--output-dir puts the files elsewhere than COMFYUI_OUTPUT_DIR."""
    done = main_py(
        "run",
        "workflows/smoke.json",
        "--output-dir",
        str(tmp_path / "other"),
        env=comfy_env(comfy, tmp_path / "out"),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["output_dir"].startswith(str(tmp_path / "other"))


def test_run_with_an_input_image_envelope(comfy: FakeComfyUI, tmp_path: Path):
    """A task envelope with a base64 image uploads it and runs the image_resize template."""
    task = {
        "template": "image_resize",
        "params": {"width": 32, "height": 32},
        "images": [{"name": "image", "base64": PNG_1PX_BASE64}],
    }
    path = tmp_path / "task.json"
    path.write_text(json.dumps(task))
    done = main_py("run", str(path), env=comfy_env(comfy, tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert len(comfy.uploads) == 1 and json.loads(done.stdout)["template"] == "image_resize"


def test_run_takes_an_image_file_and_says_how_to_give_a_missing_one(
    comfy: FakeComfyUI, tmp_path: Path
):
    """``--image NAME=PATH`` as ``submit`` has it; without it, the advice is the flag."""
    image = tmp_path / "cat.png"
    image.write_bytes(base64.b64decode(PNG_1PX_BASE64))
    env = comfy_env(comfy, tmp_path / "out")
    done = main_py(
        "run", "image_resize", "--param", "width=32", "--image", f"image={image}", env=env
    )
    assert done.returncode == 0, done.stderr
    assert len(comfy.uploads) == 1 and json.loads(done.stdout)["template"] == "image_resize"
    missing = main_py("run", "image_resize", env=env)
    assert missing.returncode == 4 and "--image image=PATH" in missing.stderr
    assert "'images'" not in missing.stderr  # no task-envelope advice on the command line


def test_run_records_the_overrides_it_applied(comfy: FakeComfyUI, tmp_path: Path):
    """``--set`` lands in the result and in manifest.json, so the run can be reproduced."""
    done = main_py(
        "run", "smoke", "--set", "2.blur_radius=3", env=comfy_env(comfy, tmp_path / "out")
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["overrides"] == {"2.blur_radius": 3}
    manifest = json.loads(Path(result["manifest"]).read_text())
    assert manifest["overrides"] == {"2.blur_radius": 3}


def test_run_with_a_store_it_cannot_write_submits_nothing(
    comfy: FakeComfyUI, seaweed: SeaweedS3, tmp_path: Path
):
    """Wrong S3 credentials: exit 7 before the graph reaches ComfyUI, as the worker would."""
    env = {
        **comfy_env(comfy, tmp_path / "out"),
        **s3_env(seaweed, "cli-bad", AWS_SECRET_ACCESS_KEY="not-the-secret"),
    }
    done = main_py("run", "smoke", env=env)
    assert done.returncode == 7, done.stderr
    assert done.stderr.startswith("error [output-storage-failed]:")
    assert comfy.submitted == []


def test_invalid_workflow_exits_4_with_one_line(comfy: FakeComfyUI, tmp_path: Path):
    """A UI-format file exits 4 with one clear error line and nothing on stdout."""
    path = tmp_path / "ui.json"
    path.write_text(json.dumps({"nodes": [], "links": []}))
    done = main_py("run", str(path), env=comfy_env(comfy, tmp_path / "out"))
    assert done.returncode == 4 and done.stdout == ""
    assert done.stderr.startswith("error [invalid-workflow]:") and "API" in done.stderr


def test_execution_failure_exits_5(comfy: FakeComfyUI, tmp_path: Path):
    """A node raising in ComfyUI exits 5."""
    done = main_py(
        "run",
        "workflows/smoke.json",
        "--set",
        "3.filename_prefix=../../escape",
        env=comfy_env(comfy, tmp_path / "out"),
    )
    assert done.returncode == 5 and "error [execution-failed]" in done.stderr


def test_unreachable_comfyui_exits_6(tmp_path: Path):
    """With nothing listening, the run exits 6 naming the URL."""
    env = {
        "COMFYUI_BASE_URL": "http://127.0.0.1:9",
        "COMFYUI_OUTPUT_DIR": str(tmp_path),
        "COMFYUI_HTTP_RETRIES": "0",
    }
    done = main_py("run", "workflows/smoke.json", env=env)
    assert done.returncode == 6 and "127.0.0.1:9 is unreachable" in done.stderr


def test_missing_setting_exits_3_naming_the_variable(tmp_path: Path):
    """A missing or malformed variable stops start-up with one line per variable."""
    done = main_py(
        "run",
        "workflows/smoke.json",
        env={"COMFYUI_OUTPUT_DIR": str(tmp_path), "COMFYUI_POLL_INTERVAL_SEC": "soon"},
    )
    assert done.returncode == 3
    assert "COMFYUI_BASE_URL: is required but not set" in done.stderr
    assert "COMFYUI_POLL_INTERVAL_SEC:" in done.stderr


def test_more_than_one_worker_thread_is_refused(tmp_path: Path):
    """LHW_NUM_WORKER_THREADS other than 1 is explained and refused."""
    done = main_py("worker", env={"LHW_NUM_WORKER_THREADS": "4"})
    assert done.returncode == 3 and "one worker drives one ComfyUI" in done.stderr


def test_check_reports_comfyui_output_dir_and_templates(comfy: FakeComfyUI, tmp_path: Path):
    """`check` prints the ComfyUI version, a writable output dir and each template's parameters."""
    done = main_py("check", env=comfy_env(comfy, tmp_path / "out"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ComfyUI 0.3.64 reachable" in done.stdout
    assert "is writable" in done.stdout
    assert "template smoke(" in done.stdout and "template image_resize(image" in done.stdout


def test_check_names_the_templates_this_comfyui_cannot_run(comfy: FakeComfyUI, tmp_path: Path):
    """A template whose model is not installed is a warning naming the model; smoke stays ok."""
    comfy.checkpoints = []
    done = main_py("check", env=comfy_env(comfy, tmp_path / "out"))
    assert done.returncode == 0, done.stdout + done.stderr
    [sdxl] = [line for line in done.stdout.splitlines() if "template txt2img_sdxl(" in line]
    assert sdxl.startswith("warn") and "cannot run on this ComfyUI" in sdxl
    assert "sd_xl_base_1.0.safetensors" in sdxl and "no checkpoints installed" in sdxl
    [smoke] = [line for line in done.stdout.splitlines() if "template smoke(" in line]
    assert smoke.startswith("ok")


def test_check_lists_each_templates_declared_models(comfy: FakeComfyUI, tmp_path: Path):
    """Declared models are listed with whether ComfyUI has them; a missing one is no failure."""
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    graph = json.loads((ROOT / "workflows/txt2img_sdxl.json").read_text())
    base = {"url": "https://huggingface.co/x/y", "sha256": "a" * 64}
    graph["_models"] = [
        {"folder": "checkpoints", "name": "sd_xl_base_1.0.safetensors", **base},
        {"folder": "loras", "name": "detail.safetensors", **base},
    ]
    (workflows / "sdxl.json").write_text(json.dumps(graph))
    env = {
        **comfy_env(comfy, tmp_path / "out"),
        "COMFYUI_WORKFLOWS_DIR": str(workflows),
        "COMFYUI_MODELS_DIR": str(tmp_path / "models"),
    }
    done = main_py("check", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    [line] = [line for line in done.stdout.splitlines() if "models:" in line]
    assert line == (
        "ok    template sdxl models: checkpoints/sd_xl_base_1.0.safetensors present, "
        "loras/detail.safetensors missing (downloaded on first use)"
    )
    del env["COMFYUI_MODELS_DIR"]  # nothing can fetch it: every task of it would fail
    unfetchable = main_py("check", env=env)
    [line] = [line for line in unfetchable.stdout.splitlines() if "models:" in line]
    assert line.startswith("warn  template sdxl models: ")
    assert line.endswith("loras/detail.safetensors missing (set COMFYUI_MODELS_DIR to fetch it)")


def test_run_downloads_a_declared_model_first(comfy: FakeComfyUI, tmp_path: Path):
    """`run` with a task declaring its checkpoint: downloaded into the models dir, then run."""
    (tmp_path / "served").mkdir()
    models = tmp_path / "models"
    models.mkdir()
    comfy.checkpoints, comfy.models_dir = [], models
    with ModelServer(tmp_path / "served") as server:
        sha = server.add("cli.safetensors", b"c" * 20_000)
        task = {
            "template": "txt2img_sdxl",
            "params": {"prompt": "p"},
            "overrides": {"4.ckpt_name": "cli.safetensors"},
            "models": [
                {
                    "folder": "checkpoints",
                    "name": "cli.safetensors",
                    "url": server.url("cli.safetensors"),
                    "sha256": sha,
                }
            ],
        }
        (tmp_path / "task.json").write_text(json.dumps(task))
        env = {
            **comfy_env(comfy, tmp_path / "out"),
            "COMFYUI_WORKFLOWS_DIR": str(ROOT / "workflows"),
            "COMFYUI_MODELS_DIR": str(models),
            "COMFYUI_MODELS_URL_ALLOW": "127.0.0.1",
            "WORKER_LOG_LEVEL": "info",
        }
        done = main_py("run", str(tmp_path / "task.json"), env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "success"
    assert "models.downloaded" in done.stderr
    assert (models / "checkpoints/cli.safetensors").stat().st_size == 20_000


def test_check_says_when_its_write_created_the_bucket(comfy: FakeComfyUI, tmp_path: Path):
    """A store that creates buckets on write: `check` warns that the bucket was missing."""
    with running_seaweed(tmp_path / "weed", auto_create_bucket=True) as store:
        env = {**comfy_env(comfy, tmp_path), **s3_env(store, "x")}
        done = main_py("check", env={**env, "WORKER_OUTPUT_URL": "s3://nosuchbucket/x"})
        again = main_py("check", env={**env, "WORKER_OUTPUT_URL": "s3://nosuchbucket/x"})
    assert done.returncode == 0, done.stdout + done.stderr
    [line] = [line for line in done.stdout.splitlines() if "outputs:" in line]
    assert line.startswith("warn") and "bucket 'nosuchbucket' did not exist" in line
    assert "created it" in line
    [line] = [line for line in again.stdout.splitlines() if "outputs:" in line]
    assert line.startswith("ok") and "s3://nosuchbucket/x" in line


def test_check_fails_on_a_missing_bucket_the_store_will_not_create(
    comfy: FakeComfyUI, seaweed: SeaweedS3, tmp_path: Path
):
    """As on AWS S3: a missing bucket is a FAIL line naming it, exit 7."""
    env = {**comfy_env(comfy, tmp_path), **s3_env(seaweed, "x")}
    done = main_py("check", env={**env, "WORKER_OUTPUT_URL": "s3://nosuchbucket/x"})
    assert done.returncode == 7, done.stdout + done.stderr
    assert "FAIL  output: " in done.stdout and "bucket 'nosuchbucket' does not exist" in done.stdout


def test_check_fails_when_comfyui_is_down_or_a_template_is_broken(tmp_path: Path):
    """`check` names the broken template file and exits non-zero when ComfyUI is down."""
    workflows = tmp_path / "wf"
    workflows.mkdir()
    (workflows / "broken.json").write_text("{not json")
    env = {
        "COMFYUI_BASE_URL": "http://127.0.0.1:9",
        "COMFYUI_OUTPUT_DIR": str(tmp_path / "o"),
        "COMFYUI_HTTP_RETRIES": "0",
        "COMFYUI_WORKFLOWS_DIR": str(workflows),
    }
    done = main_py("check", env=env)
    assert done.returncode == 6
    assert "FAIL  ComfyUI" in done.stdout and "FAIL  template file broken.json: " in done.stdout


def test_register_deploys_task_def_and_wf_spec(tmp_path: Path):
    """`register` needs no COMFYUI_* settings and puts the TaskDef and a long-timeout WfSpec."""
    with FakeLittleHorse() as lh:
        done = main_py("register", env={**lh.env(), "COMFYUI_HISTORY_TIMEOUT_SEC": "900"})
        assert done.returncode == 0, done.stderr
        assert "execute-comfyui-workflow" in lh.task_defs
        spec = lh.wf_specs["comfyui-generate"]
    thread = spec.thread_specs[spec.entrypoint_thread_name]
    task_nodes = [n for n in thread.nodes.values() if n.HasField("task")]
    [node] = task_nodes
    assert node.task.timeout_seconds == 3 * (900 + 300) and node.task.retries == 3
    assert node.task.exponential_backoff.base_interval_ms > 0
    handled = {h.specific_failure for h in node.failure_handlers}
    assert {
        "invalid-workflow",
        "execution-failed",
        "output-rejected",
        "execution-interrupted",
        "TASK_ERROR",
        "TIMEOUT",
    } <= handled
    assert thread.variable_defs[0].var_def.name == "workflow"


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_register_without_littlehorse_is_one_line_and_exit_8():
    """No LittleHorse: one line naming host:port and what to check, exit 8, no traceback."""
    port = closed_port()
    env = {"LHC_API_HOST": "127.0.0.1", "LHC_API_PORT": str(port)}
    done = main_py("register", env=env)
    assert done.returncode == 8, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error [littlehorse-unavailable]") and f"127.0.0.1:{port}" in line
    assert "LHC_API_HOST" in line


def test_check_checks_littlehorse_when_configured(comfy: FakeComfyUI, tmp_path: Path):
    """With LHC_API_HOST set, `check` reports LittleHorse too, and exits 8 when it is down."""
    with FakeLittleHorse() as lh:
        done = main_py("check", env={**comfy_env(comfy, tmp_path), **lh.env()})
    assert done.returncode == 0 and f"LittleHorse at {lh.address} reachable" in done.stdout
    env = {
        **comfy_env(comfy, tmp_path),
        "LHC_API_HOST": "127.0.0.1",
        "LHC_API_PORT": str(closed_port()),
    }
    done = main_py("check", env=env)
    assert done.returncode == 8 and "FAIL  LittleHorse: LittleHorse at 127.0.0.1:" in done.stdout


def test_ctrl_c_cancels_the_prompt_in_comfyui(comfy: FakeComfyUI, tmp_path: Path):
    """SIGINT (or SIGTERM) during `run` interrupts its prompt, so a re-run does not double the work."""
    import signal

    comfy.execution_time_s = 6  # 2 s per node: the interrupt lands at the next node boundary
    env = {"PATH": os.environ.get("PATH", ""), "WORKER_LOG_LEVEL": "warning"}
    proc = subprocess.Popen(
        [sys.executable, "main.py", "run", "smoke"],
        cwd=ROOT,
        env={**env, **comfy_env(comfy, tmp_path / "out")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: comfy.submitted, timeout_s=30)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "was interrupted" in stderr, stderr
    wait_until(lambda: comfy.submitted[0] in comfy.interrupted)


def test_credentials_in_the_comfyui_url_never_show(comfy: FakeComfyUI, tmp_path: Path):
    """A password in COMFYUI_BASE_URL reaches neither the result, the manifest nor the output."""
    url = comfy.base_url.replace("http://", "http://admin:s3cr3t-pw@")
    env = {
        **comfy_env(comfy, tmp_path / "out"),
        "COMFYUI_BASE_URL": url,
        "WORKER_LOG_LEVEL": "debug",
    }
    done = main_py("run", "smoke", env=env)
    assert done.returncode == 0, done.stderr
    manifest = Path(json.loads(done.stdout)["manifest"]).read_text()
    assert "s3cr3t-pw" not in done.stdout + done.stderr + manifest
    assert json.loads(done.stdout)["comfyui"]["base_url"] == comfy.base_url
    failing = {
        **env,
        "COMFYUI_BASE_URL": "http://admin:s3cr3t-pw@127.0.0.1:9",
        "COMFYUI_HTTP_RETRIES": "0",
    }
    done = main_py("run", "smoke", env=failing)
    assert done.returncode == 6 and "s3cr3t-pw" not in done.stdout + done.stderr
