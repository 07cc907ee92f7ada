"""``FakeLittleHorse``: the servicer wiring and the server's lifecycle.

It runs a synchronous ``grpc.server`` on its own thread pool, so it keeps serving
while the test's thread or event loop is blocked (``LHTaskWorker.start()`` calls
GetTaskDef on a blocking stub). ``stop()`` then ``start()`` serves again on the same
port with every TaskDef, WfSpec, WfRun, TaskRun and checkpoint kept, as a real
LittleHorse persists them; while stopped, clients get UNAVAILABLE.
"""

# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

import grpc
from littlehorse.config import LHConfig
from littlehorse.model.service_pb2_grpc import (
    LittleHorseServicer,
    add_LittleHorseServicer_to_server,
)

from fakes.lhclient import client_config, client_env
from fakes.littlehorse.checkpoints import CheckpointRpcs
from fakes.littlehorse.metadata import MetadataRpcs
from fakes.littlehorse.search import ReadRpcs
from fakes.littlehorse.tasks import TaskRpcs
from fakes.littlehorse.wfruns import WfRunRpcs


class FakeLittleHorse(
    MetadataRpcs, TaskRpcs, CheckpointRpcs, WfRunRpcs, ReadRpcs, LittleHorseServicer
):
    """A fake LittleHorse server: task workers, checkpoints, and single-task WfRuns.

    Attributes are safe to read from the test thread; mutate state only through the
    methods. All waits use a single ``threading.Condition`` (no polling loops).
    ``time_scale`` multiplies task timeouts and retry backoff delays.
    ``metadata_lag_s`` keeps a Put TaskDef or WfSpec revision invisible to reads
    (Get*, RunWf, SearchWfRun, PutWfSpec's TaskDef check) for that many seconds, as the
    real server's are for about 0.25 s (``SERVER_METADATA_LAG_S``); the default is
    ``$FAKE_LH_METADATA_LAG_S``, or 0 when that is unset.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        advertised_host: str | None = None,
        time_scale: float = 1.0,
        metadata_lag_s: float | None = None,
    ) -> None:
        super().__init__(
            host,
            advertised_host=advertised_host,
            time_scale=time_scale,
            metadata_lag_s=metadata_lag_s,
        )
        self._server: grpc.Server | None = None
        self._executor: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Bind ``self.port`` (an ephemeral port the first time if 0) and start serving."""
        if self._server is not None:
            raise RuntimeError("FakeLittleHorse already started")
        executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="fake-lh")
        # No SO_REUSEPORT: a second server on a taken port must fail, not share it.
        server = grpc.server(executor, options=[("grpc.so_reuseport", 0)])
        add_LittleHorseServicer_to_server(self, server)
        cause: Exception | None = None
        try:
            port = server.add_insecure_port(f"{self.host}:{self.port}")
        except RuntimeError as exc:  # grpc raises when the address is taken
            port, cause = 0, exc
        if port == 0:
            executor.shutdown(wait=False)
            raise OSError(f"could not bind {self.host}:{self.port}") from cause
        self.port = port
        with self._cond:
            self._stopped = False
        server.start()
        self._server, self._executor = server, executor
        self._start_timers()
        return self

    def stop(self, grace_s: float | None = None) -> None:
        """Stop serving: end PollTask streams with UNAVAILABLE, free the port, keep all state.

        Tasks taken for a stream but not yet sent go back to the queue; timers (task
        timeouts, retry backoff) wait and fire once the fake serves again.
        """
        with self._cond:
            self._stopped = True
            for stream in self._streams:
                if not stream.dead and stream.kill is None:
                    stream.kill = "fake LittleHorse stopped"
            self._cond.notify_all()
        if self._server is not None:
            # server.stop() cancels whatever is left after that.
            with contextlib.suppress(TimeoutError):
                self.wait_for(lambda: self.open_streams == 0, 5, "PollTask streams to end")
        server, executor = self._server, self._executor
        self._server, self._executor = None, None
        if server is not None:
            server.stop(grace_s).wait()
        if executor is not None:
            executor.shutdown(wait=True)
        self._stop_timers()

    def restart(self) -> Self:
        """``stop()`` then ``start()`` on the same port."""
        self.stop()
        return self.start()

    @property
    def serving(self) -> bool:
        """Whether the fake is started and not stopped."""
        return self._server is not None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def address(self) -> str:
        """``host:port`` of the fake."""
        return f"{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """``LHC_*`` variables pointing a worker (e.g. a subprocess) at the fake."""
        return client_env(self.host, self.port)

    def config(self, **extra: str) -> LHConfig:
        """An ``LHConfig`` pointed at the fake; ``extra`` adds ``LHC_``/``LHW_`` keys."""
        return client_config(self.host, self.port, **extra)


def _unimplemented(name: str) -> Callable[..., Any]:
    def method(self: FakeLittleHorse, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not implemented by the fake")

    method.__name__ = name
    return method


# Every RPC the mixins do not implement aborts UNIMPLEMENTED with its name.
for _name in dir(LittleHorseServicer):
    if _name[0].isupper() and getattr(FakeLittleHorse, _name) is getattr(
        LittleHorseServicer, _name
    ):
        setattr(FakeLittleHorse, _name, _unimplemented(_name))
