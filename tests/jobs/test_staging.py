"""Images too large to ride inside a job are staged in the input dir the workers share."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from comfyui_worker.errors import InvalidWorkflowError, OutputStorageError
from comfyui_worker.jobs.staging import INLINE_MAX_BYTES, image_source
from comfyui_worker.settings import ComfySettings
from comfyui_worker.workflow.images import resolve_image
from comfyui_worker.workflow.taskinput import ImageInput
from tests.stack import Stack

LOAD_AND_SAVE = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "{{image}}"}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "big"}},
}


def noisy_png(path: Path, width: int, height: int) -> bytes:
    """A real PNG that does not compress (random pixels): about 3 bytes a pixel."""
    Image.frombytes("RGB", (width, height), os.urandom(width * height * 3)).save(path)
    return path.read_bytes()


def test_a_small_image_travels_inside_the_job(tmp_path: Path):
    """Up to 512 KiB an image is base64 in the input, and nothing is written anywhere."""
    data = noisy_png(tmp_path / "small.png", 64, 64)
    entry = image_source("image", data, tmp_path / "inputs")
    assert entry == {"name": "image", "base64": base64.b64encode(data).decode("ascii")}
    assert not (tmp_path / "inputs").exists()


def test_a_large_image_is_staged_whole_under_its_hash_and_read_back_by_the_worker(
    tmp_path: Path,
):
    """Over the inline limit: written under uploads/<sha256>/, sent as a path the worker reads."""
    data = noisy_png(tmp_path / "big.png", 500, 500)
    assert len(data) > INLINE_MAX_BYTES
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    entry = image_source("my photo", data, inputs)
    digest = hashlib.sha256(data).hexdigest()
    assert entry["name"] == "my photo" and set(entry) == {"name", "path"}
    assert entry["path"].startswith(f"uploads/{digest[:32]}/") and entry["path"].endswith(".png")
    assert (inputs / entry["path"]).read_bytes() == data
    assert [p.name for p in (inputs / entry["path"]).parent.iterdir()] == [
        Path(entry["path"]).name
    ]  # no temp file left beside it
    again = image_source("my photo", data, inputs)
    assert again == entry  # the same bytes again (a retry, --id): the same input
    settings = ComfySettings.model_validate(
        {
            "COMFYUI_BASE_URL": "http://127.0.0.1:1",
            "COMFYUI_OUTPUT_DIR": str(tmp_path / "out"),
            "COMFYUI_INPUT_DIR": str(inputs),
        }
    )
    resolved = resolve_image(ImageInput(**entry), settings, unique_prefix="p")
    assert resolved.data == data


def test_a_large_image_without_an_input_dir_names_the_setting(tmp_path: Path):
    """No shared input dir: the error says how large, the limit, and COMFYUI_INPUT_DIR."""
    data = noisy_png(tmp_path / "big.png", 500, 500)
    with pytest.raises(InvalidWorkflowError) as caught:
        image_source("image", data, None)
    message = caught.value.message
    assert "image 'image' is" in message and "COMFYUI_INPUT_DIR" in message
    assert "0.5 MB" in message


def test_a_staging_disk_fault_names_the_path(tmp_path: Path):
    """An input dir that cannot be written: output-storage-failed naming the file, no half file."""
    data = noisy_png(tmp_path / "big.png", 500, 500)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "uploads").write_text("a file where a folder should be")
    with pytest.raises(OutputStorageError) as caught:
        image_source("image", data, inputs)
    assert caught.value.name == "output-storage-failed"
    assert f"{inputs}/uploads/" in caught.value.message


@pytest.mark.slow
def test_submit_stages_a_phone_sized_photo_and_the_worker_runs_on_it(
    stack: Stack, comfy, tmp_path: Path
):
    """A 2 MB photo with submit --image: staged, carried as a path, run on its own pixels."""
    inputs = tmp_path / "shared-inputs"
    inputs.mkdir()
    graph = tmp_path / "load_and_save.json"
    graph.write_text(json.dumps(LOAD_AND_SAVE))
    photo = tmp_path / "photo.png"
    data = noisy_png(photo, 500, 1400)  # the fake saves at most 512 px a side
    assert len(data) > 2_000_000
    stack.worker(comfy, COMFYUI_INPUT_DIR=str(inputs))
    stack.wait_polling()
    done = stack.main(
        "submit", str(graph), "--image", f"image={photo}", "--wait", COMFYUI_INPUT_DIR=str(inputs)
    )
    assert done.returncode == 0, done.stderr
    [output] = json.loads(done.stdout)["outputs"]
    with Image.open(output["path"]) as made:
        assert made.size == (500, 512)  # 500 wide: its own photo, not a default image
    [upload] = comfy.uploads
    uploaded = Path(comfy.files.folders["input"], upload["subfolder"], upload["name"])
    assert uploaded.read_bytes() == data  # the worker read the staged file, byte for byte
