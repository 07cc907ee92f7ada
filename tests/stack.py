"""The whole job stack for end-to-end tests: a LittleHorse, ``main.py register``, real workers.

The LittleHorse is the fake or the real server (``tests.servers.littlehorse``); each
worker is the real ``main.py worker`` as a subprocess, driving its own fake ComfyUI;
``main()`` runs any ``main.py`` command with the same environment, as a user would in
a shell.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from fakes.comfyui import FakeComfyUI
from fakes.littlehorses import LittleHorseUnderTest
from fakes.processes import start_worker, terminate
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parent.parent
TASK = "execute-comfyui-workflow"


@dataclass
class Worker:
    """A ``main.py worker`` child: its process, log, health port and TaskDef."""

    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    log_path: Path
    port: int
    task_name: str

    def logs(self) -> str:
        """What it has logged so far."""
        return self.log_path.read_text(errors="replace")

    def polling(self) -> bool:
        """Whether it holds a PollTask stream (/readyz's littlehorse check)."""
        return self.readyz().get("littlehorse") == "ok"

    def metrics(self) -> str:
        """Its /metrics text."""
        return httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text

    def readyz(self) -> dict[str, Any]:
        """Its /readyz body ({} while it does not answer)."""
        try:
            body: dict[str, Any] = httpx.get(
                f"http://127.0.0.1:{self.port}/readyz", timeout=5
            ).json()
        except httpx.HTTPError:
            return {}
        return body


class Stack:
    """A LittleHorse (fake or real) plus workers started on demand."""

    def __init__(self, tmp_path: Path, lh: LittleHorseUnderTest) -> None:
        self.lh = lh
        self.tmp_path = tmp_path
        self.output_dir = tmp_path / "out"
        self.workers: list[Worker] = []

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for worker in self.workers:
            terminate(worker.proc)
            worker.log.close()

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
        self, *args: str, timeout_s: float = 180, **env: str
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

    def worker(self, comfy: FakeComfyUI, **env: str) -> Worker:
        """Start ``main.py worker`` on ``comfy``; its log goes to a file beside the test's."""
        log_path = self.tmp_path / f"worker{len(self.workers)}.log"
        log = log_path.open("ab")
        port = free_port()
        full = {
            **self.env,
            "COMFYUI_BASE_URL": comfy.base_url,
            "COMFYUI_POLL_INTERVAL_SEC": "0.2",
            "WORKER_HTTP_PORT": str(port),
            "WORKER_HTTP_HOST": "127.0.0.1",
            **env,
        }
        worker = Worker(
            start_worker(full, log), log, log_path, port, full.get("LHW_TASK_NAME", TASK)
        )
        self.workers.append(worker)
        return worker

    def wait_polling(self, task_name: str = TASK) -> None:
        """Until every worker of that TaskDef holds a PollTask stream (its /readyz says so)."""
        for worker in self.workers:
            if worker.task_name == task_name:
                wait_until(worker.polling, 90)


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def stack(littlehorse: LittleHorseUnderTest, comfy: FakeComfyUI, tmp_path: Path) -> Iterator[Stack]:
    """The stack on each LittleHorse (fake, real), with ``main.py register`` done."""
    with Stack(tmp_path, littlehorse) as running:
        running.register()
        yield running
