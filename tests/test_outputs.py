"""Output collection, path safety, journal reuse and the manifest, on real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyui_worker.errors import OutputRejectedError
from comfyui_worker.outputs import (
    MAX_TEXT_BYTES,
    OutputRef,
    bounded_text,
    collect,
    destination,
    sha256_file,
    write_manifest,
)

MULTI = {
    "3": {"images": [{"filename": "ComfyUI_temp_a_00001_.png", "subfolder": "", "type": "temp"}]},
    "2": {"images": [{"filename": "still_00001_.png", "subfolder": "sample", "type": "output"}]},
    "5": {
        "images": [{"filename": "anim_00001_.webp", "subfolder": "", "type": "output"}],
        "animated": [True],
    },
    "6": {"latents": [{"filename": "l_00001_.latent", "subfolder": "lat", "type": "output"}]},
    "7": {"text": ["hello", "world"]},
    "8": {
        "gifs": [
            {
                "filename": "v_00001.mp4",
                "subfolder": "",
                "type": "output",
                "format": "video/h264-mp4",
            }
        ]
    },
}


def ref(filename: str = "a.png", subfolder: str = "", comfy_type: str = "output") -> OutputRef:
    return OutputRef(
        node_id="9", key="images", filename=filename, subfolder=subfolder, comfy_type=comfy_type
    )


def test_collect_finds_files_under_every_key_and_skips_temp():
    """images, latents, gifs are files; temp previews are skipped by default; text is kept."""
    got = collect(MULTI, include_temp=False)
    assert sorted((f.node_id, f.key, f.filename) for f in got.files) == [
        ("2", "images", "still_00001_.png"),
        ("5", "images", "anim_00001_.webp"),
        ("6", "latents", "l_00001_.latent"),
        ("8", "gifs", "v_00001.mp4"),
    ]
    assert got.skipped_temp == 1
    assert got.text == {"7": ["hello", "world"]}
    assert got.values == {"5": {"animated": [True]}}


def test_collect_includes_temp_when_configured():
    """With include_temp the preview is a file too."""
    got = collect(MULTI, include_temp=True)
    assert any(f.comfy_type == "temp" for f in got.files) and got.skipped_temp == 0


def test_destination_keeps_subfolders_and_separates_temp(tmp_path: Path):
    """Outputs keep their subfolder; non-output types get their own top folder."""
    assert destination(tmp_path, ref("x.png", "a/b")) == tmp_path / "a" / "b" / "x.png"
    assert destination(tmp_path, ref("x.png", "", "temp")) == tmp_path / "temp" / "x.png"


@pytest.mark.parametrize(
    ("filename", "subfolder"),
    [
        ("../x.png", ""),
        ("x.png", "../up"),
        ("x.png", "/etc"),
        ("/etc/passwd", ""),
        ("..", ""),
        ("a\\..\\b", ""),
        ("", ""),
        ("x.png", "a/../../b"),
        ("C:x", ""),
    ],
)
def test_destination_rejects_escapes(tmp_path: Path, filename: str, subfolder: str):
    """Absolute paths, `..` and separators in names are rejected, naming node and file."""
    with pytest.raises(OutputRejectedError, match="output of node 9"):
        destination(tmp_path, ref(filename, subfolder))


def test_destination_rejects_symlink_escape(tmp_path: Path):
    """A subfolder that is a symlink out of the run dir is caught by the resolve check."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "link").symlink_to(tmp_path.parent)
    with pytest.raises(OutputRejectedError, match="leaves the output directory"):
        destination(run, ref("x.png", "link"))


def test_bounded_text_cuts_and_says_so():
    """Text beyond the budget is dropped from the result and flagged."""
    big = "x" * (MAX_TEXT_BYTES - 10)
    kept, cut = bounded_text({"1": [big, "y" * 100]})
    assert kept == {"1": [big]} and cut
    assert bounded_text({"1": ["a"]}) == ({"1": ["a"]}, False)


def test_manifest_is_written_atomically(tmp_path: Path):
    """manifest.json holds the data and no temp file is left behind."""
    path = write_manifest(tmp_path / "run", {"prompt_id": "p", "outputs": []}, fsync=True)
    assert json.loads(path.read_text())["prompt_id"] == "p"
    assert [p.name for p in path.parent.iterdir()] == ["manifest.json"]


def test_sha256_file_matches_hashlib(tmp_path: Path):
    """The chunked hash equals a one-shot hash."""
    import hashlib

    data = bytes(range(256)) * 10_000
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()
