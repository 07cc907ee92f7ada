"""Item 3: saving outputs through Runner.run, in a worker process of its own.

One big FakeBigOutput (1 GiB) is saved by the worker's Downloader with fsync on (the
default) and off; the same /view bytes streamed by plain httpx to /dev/null give the
practical ceiling, and a plain write+fsync of the same size shows what the disk allows.
Peak RSS growth is the child's VmHWM over the download (peak reset just before it).
Then one prompt with many small outputs (EmptyImage batch -> SaveImage). Each measured
write starts after ``os.sync`` and a pause (``settle_s``), so rounds compare fairly on
hosts whose memory is backed lazily (see ``worker_side.Download``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.child import run_worker_side
from benchmarks.fakeproc import FakeProcess


def measure(
    fake: FakeProcess,
    work_dir: Path,
    size_bytes: int,
    small: int,
    *,
    rounds: int,
    settle_s: float,
) -> dict[str, Any]:
    """Run the download child (``worker_side.Download``) against the fake ComfyUI process."""
    args = ["download", "--base-url", fake.base_url, "--out", str(work_dir / "download")]
    args += ["--size", str(size_bytes), "--small", str(small), "--rounds", str(rounds)]
    args += ["--settle", str(settle_s)]
    return run_worker_side(args, work_dir / "worker-download.log", timeout_s=600)
