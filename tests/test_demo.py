"""The README's quick-start demo keeps working."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# The quick-start demo as a subprocess.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("littlehorse", ["auto", "fake"])
def test_demo_runs_every_task_and_drains(tmp_path: Path, littlehorse: str):
    """`python -m tests.demo` gets three successes, two named business errors, a job, and exits 0;
    on the real LittleHorse where one can be started (here it can), else on the fake."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.demo",
            "--output-dir",
            str(tmp_path),
            "--littlehorse",
            littlehorse,
        ],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=600,  # a first real LittleHorse downloads ~150 MB from Maven Central
    )
    assert done.returncode == 0, done.stdout + done.stderr
    first = done.stdout.splitlines()[0]
    server = "real LittleHorse 1.2.1 at" if littlehorse == "auto" else "fake LittleHorse at"
    assert first.startswith(server), first
    assert done.stdout.count("TASK_SUCCESS") == 3
    assert done.stdout.count("TASK_EXCEPTION invalid-workflow") == 2
    assert "did you mean 'color'?" in done.stdout
    assert len(list(tmp_path.rglob("manifest.json"))) == 4  # three tasks and one job
    assert "$ main.py submit smoke --param color=65280 --wait   (exit 0)" in done.stdout
    assert "result JSON on stdout: status success" in done.stdout
    assert "$ main.py jobs   (exit 0)" in done.stdout and "completed  default  smoke" in done.stdout
    assert done.stdout.count(" (WfRun demo-") == 5
