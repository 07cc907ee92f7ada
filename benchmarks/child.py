"""Run ``benchmarks.worker_side`` in a child process and read its JSON answer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT


def run_worker_side(args: list[str], log_path: Path, timeout_s: float) -> dict[str, Any]:
    """``python -m benchmarks.worker_side ARGS``; stderr goes to ``log_path``."""
    with log_path.open("ab") as log:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.worker_side", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            timeout=timeout_s,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"worker_side {args[0]} exited {done.returncode}; see {log_path}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result
