"""Stopping a child process the way its users would, never leaving it behind."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def terminate(proc: subprocess.Popen[Any], timeout_s: float = 30.0) -> int:
    """SIGTERM (a graceful stop), then SIGKILL if it lingers; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
