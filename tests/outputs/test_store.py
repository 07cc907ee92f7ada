"""The local output store on real files, including full and read-only file systems."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfyui_worker.errors import OutputStorageError
from comfyui_worker.outputs.store import LocalStore, sha256_file


def chunks(data: bytes, size: int = 4096) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def parts(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".part")]


def test_write_streams_hashes_and_renames_into_place(tmp_path: Path):
    """A stored file has the stream's bytes and sha256, is world-readable, and no temp remains."""
    data = os.urandom(300_000)
    run = LocalStore(tmp_path, fsync=True).run("wf/task")
    run.prepare()
    stored = run.write("a/b.png", chunks(data), media_type="image/png", size_hint=len(data))
    target = tmp_path / "wf/task/a/b.png"
    assert target.read_bytes() == data and stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert parts(tmp_path) == []


def test_manifest_is_atomic_and_readable(tmp_path: Path):
    """manifest.json holds the data, is 0644, and no temp file is left behind."""
    run = LocalStore(tmp_path, fsync=True).run("r")
    run.prepare()
    location = Path(run.write_manifest({"prompt_id": "p", "outputs": []}))
    assert json.loads(location.read_text())["prompt_id"] == "p"
    assert stat.S_IMODE(location.stat().st_mode) == 0o644
    assert parts(tmp_path) == []


def test_a_retry_reuses_whole_files_only(tmp_path: Path):
    """A file an earlier attempt stored is reused; a changed one is not."""
    store = LocalStore(tmp_path, fsync=False)
    first = store.run("r")
    first.prepare()
    first.write("x.bin", [b"abc"], media_type="x", size_hint=3)
    first.write("y.bin", [b"def"], media_type="x", size_hint=3)
    (tmp_path / "r/y.bin").write_bytes(b"XYZ")
    retry = store.run("r")
    retry.prepare()
    assert retry.reusable("x.bin") is not None
    assert retry.reusable("y.bin") is None


def test_prepare_sweeps_stale_temp_files(tmp_path: Path):
    """A .part a killed attempt left (GBs for a video) is removed when a retry reuses the dir."""
    (tmp_path / "r/sub").mkdir(parents=True)
    stale = tmp_path / "r/sub/.big.mp4.abc123.part"
    stale.write_bytes(b"\0" * 1000)
    LocalStore(tmp_path, fsync=False).run("r").prepare()
    assert not stale.exists()


def test_a_symlinked_run_directory_is_refused(tmp_path: Path):
    """A run dir that is a symlink out of the output dir is never followed."""
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "out"
    (root / "wf").mkdir(parents=True)
    (root / "wf" / "task").symlink_to(outside)
    with pytest.raises(OutputStorageError, match="is a symlink") as info:
        LocalStore(root, fsync=False).run("wf/task").prepare()
    assert info.value.details["path"] == str(root / "wf" / "task")
    assert list(outside.iterdir()) == []


def test_a_full_disk_is_a_named_error_and_leaves_no_temp_file(tiny_fs: Path):
    """ENOSPC mid-file is output-storage-failed with the path; the partial file is removed."""
    run = LocalStore(tiny_fs, fsync=True).run("r")
    run.prepare()
    data = b"\1" * (1024 * 1024)
    with pytest.raises(OutputStorageError, match="ENOSPC") as info:
        run.write("big.bin", chunks(data), media_type="x", size_hint=len(data))
    assert info.value.details["path"] == str(tiny_fs / "r/big.bin")
    assert not info.value.business and parts(tiny_fs) == []


def test_a_manifest_on_a_full_disk_leaves_no_temp_file(tiny_fs: Path):
    """A manifest that does not fit fails as output-storage-failed with no .manifest.*.part."""
    run = LocalStore(tiny_fs, fsync=True).run("r")
    run.prepare()
    with pytest.raises(OutputStorageError, match="ENOSPC"):
        run.write_manifest({"text": "x" * (1024 * 1024)})
    assert parts(tiny_fs) == [] and not (tiny_fs / "r/manifest.json").exists()


def test_a_read_only_output_dir_is_a_named_error(tiny_fs: Path):
    """EROFS is reported naming the output directory, by the start-up check too."""
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    store = LocalStore(tiny_fs / "out", fsync=False)
    with pytest.raises(OutputStorageError, match="EROFS") as info:
        store.check_writable()
    assert str(tiny_fs / "out") in info.value.message


def test_a_name_too_long_is_a_named_error(tmp_path: Path):
    """ENAMETOOLONG (a run key from a very long id) names the path instead of crashing."""
    run = LocalStore(tmp_path, fsync=False).run("w" * 300)
    with pytest.raises(OutputStorageError, match="ENAMETOOLONG"):
        run.prepare()


def test_sha256_file_matches_hashlib(tmp_path: Path):
    """The chunked hash equals a one-shot hash."""
    data = bytes(range(256)) * 10_000
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()
