"""Model sources against real servers: S3 (SeaweedFS), and a local HTTP server killed mid-file."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from benchmarks.common import byte_chunks
from comfyui_worker.comfy.client import ComfyClient
from comfyui_worker.errors import InvalidWorkflowError
from comfyui_worker.models.ensure import ModelEnsurer
from comfyui_worker.models.sources import Sources
from comfyui_worker.settings import ComfySettings
from comfyui_worker.workflow.modeldecl import ModelDecl
from fakes.comfyui import FakeComfyUI
from fakes.seaweed import SeaweedS3
from tests.conftest import make_settings, wait_until
from tests.modelserver import ModelServer

ROOT = Path(__file__).parent.parent.parent


def settings_for(comfy: FakeComfyUI, tmp_path: Path, models_dir: Path, **env: str) -> ComfySettings:
    return make_settings(
        comfy.base_url,
        tmp_path / "out",
        COMFYUI_MODELS_DIR=str(models_dir),
        COMFYUI_MODELS_URL_ALLOW="127.0.0.1",
        **env,
    )


def ensure_all(settings: ComfySettings, *models: ModelDecl) -> list[str]:
    trail: list[str] = []
    with (
        ComfyClient(settings) as client,
        ModelEnsurer(settings, client).ensured(models, trail.append),
    ):
        pass
    return trail


def test_an_s3_model_downloads_through_the_output_settings(
    seaweed: SeaweedS3, comfy: FakeComfyUI, tmp_path: Path, models_dir: Path
) -> None:
    """s3://bucket/key is read with the AWS_* settings the outputs use, and verified."""
    key = f"models-{uuid.uuid4().hex[:8]}/vae.safetensors"
    data = os.urandom(3_000_000)
    seaweed.client().put_object(Bucket=seaweed.bucket, Key=key, Body=data)
    settings = settings_for(comfy, tmp_path, models_dir, **seaweed.config())
    model = ModelDecl(
        folder="vae",
        name="vae.safetensors",
        url=f"s3://{seaweed.bucket}/{key}",
        sha256=hashlib.sha256(data).hexdigest(),
    )
    trail = ensure_all(settings, model)
    assert (models_dir / "vae/vae.safetensors").read_bytes() == data
    assert trail[0].startswith("model vae.safetensors: downloaded 3.0 MB")
    assert ensure_all(settings, model) == ["model vae.safetensors: present"]


def test_a_missing_s3_object_is_invalid_workflow(
    seaweed: SeaweedS3, comfy: FakeComfyUI, tmp_path: Path, models_dir: Path
) -> None:
    """An s3:// key that does not exist names the model."""
    settings = settings_for(comfy, tmp_path, models_dir, **seaweed.config())
    model = ModelDecl(
        folder="vae", name="no.safetensors", url=f"s3://{seaweed.bucket}/absent/no", sha256="a" * 64
    )
    with pytest.raises(InvalidWorkflowError, match=r"model 'no\.safetensors'.*does not exist"):
        ensure_all(settings, model)


def test_an_s3_model_resumes_a_partial_file(
    seaweed: SeaweedS3, comfy: FakeComfyUI, tmp_path: Path, models_dir: Path
) -> None:
    """A partial file left behind is continued with a ranged GET."""
    key = f"models-{uuid.uuid4().hex[:8]}/lora.safetensors"
    data = os.urandom(1_000_000)
    seaweed.client().put_object(Bucket=seaweed.bucket, Key=key, Body=data)
    (models_dir / "loras").mkdir()
    (models_dir / "loras/.l.safetensors.part").write_bytes(data[:400_000])
    settings = settings_for(comfy, tmp_path, models_dir, **seaweed.config())
    model = ModelDecl(
        folder="loras",
        name="l.safetensors",
        url=f"s3://{seaweed.bucket}/{key}",
        sha256=hashlib.sha256(data).hexdigest(),
    )
    trail = ensure_all(settings, model)
    assert "resumed at 400.0 KB" in trail[0]
    assert (models_dir / "loras/l.safetensors").read_bytes() == data


def test_the_sources_never_follow_a_redirect_to_a_refused_address(tmp_path: Path) -> None:
    """Sources check the allow-list before connecting (here: nothing allowed)."""
    settings = make_settings("http://127.0.0.1:1", tmp_path / "out")
    model = ModelDecl(folder="vae", name="v.pt", url="http://127.0.0.1:9/v.pt", sha256="a" * 64)
    with pytest.raises(InvalidWorkflowError, match="loopback"), Sources(settings).open(model, 0):
        pass


CHILD = textwrap.dedent(
    """
    import json, sys
    from comfyui_worker.comfy.client import ComfyClient
    from comfyui_worker.models.ensure import ModelEnsurer
    from comfyui_worker.settings import load_comfy
    from comfyui_worker.workflow.modeldecl import ModelDecl
    settings = load_comfy(json.loads(sys.argv[1]))
    model = ModelDecl.model_validate(json.loads(sys.argv[2]))
    measure = None
    if len(sys.argv) > 3:
        from benchmarks.common import peak_rss_growth
        measure = peak_rss_growth(exact=True)
    with ComfyClient(settings) as client:
        with ModelEnsurer(settings, client).ensured([model], print):
            pass
    if measure is not None:
        print(json.dumps({"growth_mib": measure()}))
    """
)


def child(settings_env: dict[str, str], model: ModelDecl, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        CHILD,
        json.dumps(settings_env),
        model.model_dump_json(exclude_none=True),
        *extra,
    ]


@pytest.mark.slow
def test_kill_9_mid_download_leaves_no_file_and_the_next_task_resumes(
    comfy: FakeComfyUI, tmp_path: Path, models_dir: Path
) -> None:
    """A worker killed mid-download leaves only the partial file; the next one completes it."""
    (tmp_path / "served").mkdir()
    data = b"".join(byte_chunks(40 * 2**20, seed=3))
    with ModelServer(tmp_path / "served") as server:
        sha = server.add("k.safetensors", data)
        server.hold_after["/k.safetensors"] = 16 * 2**20
        model = ModelDecl(
            folder="checkpoints", name="k.safetensors", url=server.url("k.safetensors"), sha256=sha
        )
        env = {
            "COMFYUI_BASE_URL": comfy.base_url,
            "COMFYUI_OUTPUT_DIR": str(tmp_path / "out"),
            "COMFYUI_MODELS_DIR": str(models_dir),
            "COMFYUI_MODELS_URL_ALLOW": "127.0.0.1",
        }
        proc = subprocess.Popen(
            child(env, model), cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
        )
        partial = models_dir / "checkpoints/.k.safetensors.part"
        try:
            wait_until(lambda: partial.exists() and partial.stat().st_size >= 8 * 2**20, 60)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        assert not (models_dir / "checkpoints/k.safetensors").exists()
        assert "k.safetensors" not in comfy.installed("checkpoints")
        server.released.set()
        del server.hold_after["/k.safetensors"]
        trail = ensure_all(settings_for(comfy, tmp_path, models_dir), model)
        assert "resumed at" in trail[0]
        assert server.requests[-1][1] is not None  # the second download asked for a range
    assert (
        hashlib.sha256((models_dir / "checkpoints/k.safetensors").read_bytes()).hexdigest() == sha
    )


@pytest.mark.slow
def test_a_1_gib_model_downloads_with_flat_memory(
    comfy: FakeComfyUI, tmp_path: Path, models_dir: Path
) -> None:
    """1 GiB through the worker's download grows its process's peak RSS by at most 64 MiB."""
    (tmp_path / "served").mkdir()
    size = 2**30
    digest = hashlib.sha256()
    with open(tmp_path / "served/big.safetensors", "wb") as handle:
        for piece in byte_chunks(size, seed=5):
            digest.update(piece)
            handle.write(piece)
    with ModelServer(tmp_path / "served") as server:
        model = ModelDecl(
            folder="checkpoints",
            name="big.safetensors",
            url=server.url("big.safetensors"),
            sha256=digest.hexdigest(),
        )
        env = {
            "COMFYUI_BASE_URL": comfy.base_url,
            "COMFYUI_OUTPUT_DIR": str(tmp_path / "out"),
            "COMFYUI_MODELS_DIR": str(models_dir),
            "COMFYUI_MODELS_URL_ALLOW": "127.0.0.1",
        }
        done = subprocess.run(
            child(env, model, "measure"),
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"peak RSS growth for a 1 GiB model: {report['growth_mib']:.1f} MiB")
    assert report["growth_mib"] <= 64, report
    assert (models_dir / "checkpoints/big.safetensors").stat().st_size == size


def test_plain_http_only_to_an_allowed_address(tmp_path: Path) -> None:
    """http:// to a public address is refused (a model travels over https)."""
    settings = make_settings("http://127.0.0.1:1", tmp_path / "out")

    def public(host: str, port: int) -> list[str]:
        return ["93.184.215.14"]

    model = ModelDecl(folder="vae", name="v.pt", url="http://models.test/v.pt", sha256="a" * 64)
    with (
        pytest.raises(InvalidWorkflowError, match="must be https://"),
        Sources(settings, resolver=public).open(model, 0),
    ):
        pass
