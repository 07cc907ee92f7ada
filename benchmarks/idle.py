"""Item 4: CPU the worker process uses while Runner.run waits on a long execution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.child import run_worker_side
from benchmarks.fakeproc import FakeProcess


def measure(fake: FakeProcess, work_dir: Path, seconds: float) -> dict[str, Any]:
    """A FakeSleep of ``seconds`` in a fresh worker process; its user+sys CPU over the run."""
    args = ["idle", "--base-url", fake.base_url, "--out", str(work_dir / "idle")]
    args += ["--seconds", str(seconds)]
    return run_worker_side(args, work_dir / "worker-idle.log", timeout_s=seconds + 120)
