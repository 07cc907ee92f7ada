"""The whole job stack for end-to-end tests: fake LittleHorse, ``main.py register``, real workers.

Each worker is the real ``main.py worker`` as a subprocess, driving its own fake
ComfyUI; ``main()`` runs any ``main.py`` command with the same environment, as a
user would in a shell.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import IO

from fakes.comfyui import FakeComfyUI
from fakes.littlehorse import FakeLittleHorse
from fakes.processes import start_worker, terminate

ROOT = Path(__file__).resolve().parent.parent


class Stack:
    """A fake LittleHorse with the WfSpecs registered, plus workers started on demand."""

    def __init__(self, tmp_path: Path, *, time_scale: float = 0.1) -> None:
        # The 1800 s task timeout becomes 180 s, the 5 s first retry backoff 0.5 s.
        self.lh = FakeLittleHorse(time_scale=time_scale)
        self.tmp_path = tmp_path
        self.output_dir = tmp_path / "out"
        self._workers: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []

    def __enter__(self) -> Stack:
        self.lh.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        for proc, log in self._workers:
            terminate(proc)
            log.close()
        self.lh.stop()

    @property
    def env(self) -> dict[str, str]:
        """What every command gets: LittleHorse, the output dir, the templates, quiet logs."""
        return {
            "PATH": os.environ.get("PATH", ""),
            **self.lh.env(),
            "COMFYUI_OUTPUT_DIR": str(self.output_dir),
            "COMFYUI_WORKFLOWS_DIR": str(ROOT / "workflows"),
            "COMFYUI_HISTORY_TIMEOUT_SEC": "600",
            "WORKER_LOG_LEVEL": "warning",
        }

    def main(
        self, *args: str, timeout_s: float = 120, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """``main.py ARGS`` to completion, output captured."""
        return subprocess.run(
            [sys.executable, "main.py", *args],
            cwd=ROOT,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def register(self, *args: str) -> None:
        """``main.py register`` (with ``--lane NAME`` for a lane)."""
        done = self.main("register", *args)
        assert done.returncode == 0, done.stderr

    def worker(self, comfy: FakeComfyUI, **env: str) -> subprocess.Popen[bytes]:
        """Start ``main.py worker`` on ``comfy``; its log goes to a file beside the test's."""
        log = (self.tmp_path / f"worker{len(self._workers)}.log").open("ab")
        full = {
            **self.env,
            "COMFYUI_BASE_URL": comfy.base_url,
            "COMFYUI_POLL_INTERVAL_SEC": "0.2",
            "WORKER_HTTP_PORT": "0",
            **env,
        }
        proc = start_worker(full, log)
        self._workers.append((proc, log))
        return proc

    def wait_polling(self, task_name: str) -> None:
        """Until a worker's PollTask request waits on that TaskDef."""
        self.lh.wait_polling(60, task_def_name=task_name)
