"""Starting ``main.py worker`` as a child, and stopping a child the way its users would."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent


def start_worker(env: Mapping[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    """``python main.py worker`` from the project root, with exactly ``env``; output to ``log``."""
    return subprocess.Popen(
        [sys.executable, "main.py", "worker"], cwd=ROOT, env=dict(env), stdout=log, stderr=log
    )


def terminate(proc: subprocess.Popen[Any], timeout_s: float = 30.0) -> int:
    """SIGTERM (a graceful stop), then SIGKILL if it lingers; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
