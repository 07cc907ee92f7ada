"""Everything that leans on the LittleHorse SDK's internals, in this one module.

The SDK (littlehorse-client 1.3.0) leaves gaps a production worker must close:

- it decodes a task's JSON input before its own ``try``: a value that is not JSON
  (or is nested thousands deep) never gets reported and its slot leaks for good;
- it notices a dead PollTask stream, or a LittleHorse that came back, only at its
  next 60 s heartbeat, and gives up at start if LittleHorse is down;
- it gives up reporting a result after ~30 s of LittleHorse being away;
- a task it claimed but parked (N slots claim N+1 tasks) is invisible until a slot frees.

The seam is ``LHConfig.stub()``, which the SDK calls for every stub it uses:
``ObservedConfig`` hands out stubs that watch PollTask, ReportTask and
RegisterTaskWorker, feeding a ``Ledger`` of what the worker holds (claimed →
started → finished → reported, like arq's ``self.tasks``). The few private names
used besides (``LHTask``, ``LHTaskWorker._task``/``_heartbeat``/``_connections``,
``LHConnection._schedule_task_semaphore``, ``LHConfig._configs``) are pinned by
``tests/worker/test_sdk.py``, which fails loudly if an SDK upgrade moves them.
"""

from __future__ import annotations

from typing import Any

from littlehorse.config import LHConfig
from littlehorse.worker import LHTask, LHTaskWorker

from comfyui_worker.worker.ledger import Ledger
from comfyui_worker.worker.stub import Gate, ObservedStub


class ObservedConfig(LHConfig):
    """The SDK's config, handing out stubs that feed the ledger."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        gate: Gate | None = None,
        report_patience_s: float = 600.0,
    ) -> None:
        super().__init__()
        self.ledger = ledger
        self.gate = gate
        self.report_patience_s = report_patience_s

    def stub(
        self, server: str | None = None, name: str = "default", async_channel: bool = False
    ) -> Any:
        """The SDK's stub, observed when it is one of the worker's async stubs."""
        real = super().stub(server=server, name=name, async_channel=async_channel)
        return ObservedStub(real, self) if async_channel else real


def set_slots(config: LHConfig, slots: int) -> None:
    """How many tasks the SDK runs at once (its LHW_NUM_WORKER_THREADS), overriding the env."""
    config._configs["LHW_NUM_WORKER_THREADS"] = str(slots)


def release_parked(worker: LHTaskWorker) -> int:
    """Let tasks the SDK claimed but parked enter the task function now (to be handed back).

    With N slots the SDK claims N+1 tasks and holds the extra one on its slot
    semaphore until a slot frees; while draining, that would keep a task LittleHorse
    thinks is running for a whole execution. One release per connection lets it in.
    """
    released = 0
    for connection in list(worker._connections.values()):
        connection._schedule_task_semaphore.release()
        released += 1
    return released


def install_task(worker: LHTaskWorker, task_def: Any) -> None:
    """Give the worker its TaskDef, as ``LHTaskWorker.start()`` would before polling."""
    worker._task = LHTask(worker._callable, task_def)


def started(worker: LHTaskWorker) -> bool:
    """Whether the worker has its TaskDef (and so may be stopped)."""
    return hasattr(worker, "_task")


async def heartbeat(worker: LHTaskWorker) -> None:
    """The SDK's heartbeat loop: RegisterTaskWorker, then (re)open the PollTask streams."""
    await worker._heartbeat()
