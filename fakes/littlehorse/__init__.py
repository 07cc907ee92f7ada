"""A fake LittleHorse server (``littlehorse-client`` 1.3 API) for tests, demos and developers.

It speaks the real gRPC API on a real port, so the real SDK worker (``LHTaskWorker``)
and ``LittleHorseStub`` clients drive it. It implements the task-worker calls,
checkpoints with the server's fencing rule, task timeouts and retries, and a WfRun
engine for single-TASK WfSpecs with failure handlers. ``docs/littlehorse-fake.md``
lists the server rules it follows and where it differs from the real server 1.2.1.
"""

from fakes.littlehorse.core import SERVER_METADATA_LAG_S
from fakes.littlehorse.server import FakeLittleHorse
from fakes.littlehorse.worker_thread import WorkerThread, close_sync_channels

__all__ = ["SERVER_METADATA_LAG_S", "FakeLittleHorse", "WorkerThread", "close_sync_channels"]
