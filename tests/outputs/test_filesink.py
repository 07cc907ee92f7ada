"""FileSink: the same bytes and hash inline or threaded, errors surface, nothing hangs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from comfyui_worker.outputs import filesink
from comfyui_worker.outputs.filesink import FileSink

CHUNKS = [bytes([i % 251]) * (100_000 + i) for i in range(40)]
DATA = b"".join(CHUNKS)


@pytest.mark.parametrize(
    "expected_bytes", [len(DATA), None, 10], ids=["known-big", "unknown", "small-inline"]
)
@pytest.mark.parametrize("fsync", [True, False])
def test_written_bytes_and_hash_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, expected_bytes: int | None, fsync: bool
):
    """Inline and threaded paths, with periodic sync+drop, write exactly the stream."""
    monkeypatch.setattr(filesink, "THREADED_FROM_BYTES", 1_000_000)
    monkeypatch.setattr(filesink, "SYNC_EVERY_BYTES", 1_000_000)
    path = tmp_path / "out.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    sink = FileSink(fd, fsync=fsync, expected_bytes=expected_bytes)
    for chunk in CHUNKS:
        sink.write(chunk)
    digest = sink.finish()
    os.close(fd)
    assert path.read_bytes() == DATA and digest == hashlib.sha256(DATA).hexdigest()


def test_a_write_error_surfaces_instead_of_hanging(tmp_path: Path):
    """A writer-thread failure (a read-only fd here) is raised to the producer."""
    path = tmp_path / "ro.bin"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)
    sink = FileSink(fd, fsync=False, expected_bytes=None)
    with pytest.raises(OSError):
        for chunk in CHUNKS * 5:
            sink.write(chunk)
        sink.finish()
    sink.abandon()
    os.close(fd)


def test_abandon_stops_the_writer_thread(tmp_path: Path):
    """Abandoning mid-stream (a network error upstream) joins the thread."""
    fd = os.open(tmp_path / "x.bin", os.O_WRONLY | os.O_CREAT)
    sink = FileSink(fd, fsync=False, expected_bytes=None)
    sink.write(b"abc")
    sink.abandon()
    os.close(fd)
    assert sink._thread is not None and not sink._thread.is_alive()
