"""The real ``main.py worker`` between a fake LittleHorse and a ComfyUI (items 5 and 6)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from littlehorse.model import TaskStatus

from benchmarks.common import WORKFLOWS
from fakes.littlehorse import FakeLittleHorse
from fakes.processes import start_worker, terminate

TASK = "execute-comfyui-workflow"


@contextmanager
def running_worker(
    base_url: str, out_dir: Path, log_path: Path, **env: str
) -> Iterator[FakeLittleHorse]:
    """A fake LittleHorse with the worker polling it; a failure names the worker's log."""
    with FakeLittleHorse() as lh, log_path.open("ab") as log:
        worker_env = {
            "PATH": os.environ.get("PATH", ""),
            **lh.env(),
            "COMFYUI_BASE_URL": base_url,
            "COMFYUI_OUTPUT_DIR": str(out_dir),
            "COMFYUI_WORKFLOWS_DIR": str(WORKFLOWS),
            "WORKER_HTTP_PORT": "0",
            "WORKER_LOG_LEVEL": "warning",
            "WORKER_LOG_FORMAT": "json",
            **env,
        }
        proc = start_worker(worker_env, log)
        try:
            lh.wait_polling(timeout_s=60)
            yield lh
        except Exception as exc:
            raise RuntimeError(f"{exc} (worker log: {log_path})") from exc
        finally:
            terminate(proc)


def wait_reports(lh: FakeLittleHorse, guids: list[str], timeout_s: float) -> None:
    """Wait until every task was reported; raise if any did not succeed."""
    wanted = set(guids)

    def done() -> bool:
        return len({r.task_run_id.task_guid for r in lh.reports} & wanted) == len(wanted)

    lh.wait_for(done, timeout_s, f"{len(wanted)} task reports")
    failed = [
        r
        for r in lh.reports
        if r.task_run_id.task_guid in wanted and r.status != TaskStatus.TASK_SUCCESS
    ]
    if failed:
        raise RuntimeError(f"{len(failed)} tasks did not succeed, e.g. {failed[0]}")
